//! What an operator relies on: the access log, Expect: 100-continue, backend
//! host names, the connection limit, active health checks and passive failures.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

// ---------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------

#[test]
fn access_log_writes_one_json_line_per_request() {
    let b = Backend::echo().named("echo-1").start();
    let log_path = temp_path("access", "log");
    let mut cfg = config(vec![route("only.example", "ROUND_ROBIN", vec![b.config()])]);
    cfg["accessLog"] = json!({"path": log_path.to_string_lossy()});
    let mut rw = Ringway::start(cfg);

    let r = exchange(
        rw.addr(),
        b"GET /a?b=1 HTTP/1.1\r\nHost: only.example\r\nX-Request-Id: abc\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(get(rw.addr(), "elsewhere.example", "/nope").status, 404);
    let r = exchange(rw.addr(), b"GET / HTTP/1.1\r\nHost: only.example\r\nno colon here\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head);

    rw.terminate();
    let exit = rw.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "ringway did not exit cleanly after SIGTERM: {exit:?}");
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l:?}")))
        .collect();
    assert_eq!(lines.len(), 3, "access log:\n{text}");
    for (l, raw) in lines.iter().zip(text.lines()) {
        for field in ["time", "requestId", "client", "method", "path", "status", "backend", "bytes", "durationUs"] {
            assert!(l.get(field).is_some(), "field {field} missing in {raw}");
        }
        assert!(l["status"].is_u64() && l["bytes"].is_u64() && l["durationUs"].is_u64(), "{raw}");
        assert!(l["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{raw}");
    }
    let ok = lines.iter().find(|l| l["status"] == 200).unwrap_or_else(|| panic!("no 200 line in:\n{text}"));
    assert_eq!(ok["path"], "/a?b=1", "{text}");
    assert_eq!(ok["requestId"], "abc", "{text}");
    assert_eq!(ok["method"], "GET", "{text}");
    assert!(ok["backend"].as_str().is_some_and(|s| !s.is_empty()), "200 line has no backend id:\n{text}");
    assert!(ok["bytes"].as_u64().unwrap_or(0) > 0, "{text}");
    let not_found = lines.iter().find(|l| l["status"] == 404).unwrap_or_else(|| panic!("no 404 line in:\n{text}"));
    assert!(not_found["backend"].is_null(), "404 line names a backend:\n{text}");
    assert!(lines.iter().any(|l| l["status"] == 400), "no 400 line in:\n{text}");
}

// ---------------------------------------------------------------------------
// Expect: 100-continue
// ---------------------------------------------------------------------------

const EXPECT_HEAD: &[u8] =
    b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";

#[test]
fn expect_continue_gets_100_then_the_final_answer() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(EXPECT_HEAD);
    let interim = c.response();
    assert_eq!(interim.status, 100, "expected 100 Continue before the body:\n{}", interim.head);
    assert!(interim.head.starts_with("HTTP/1.1 100 Continue\r\n"), "{}", interim.head);
    c.send(b"hello");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.text().contains("body-len 5\n"), "{}", r.text());
    assert!(r.text().contains(&format!("body-hash {}\n", hash(b"hello"))), "{}", r.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].header("expect"), None, "Expect was forwarded:\n{}", seen[0].head);
}

#[test]
fn expect_continue_over_the_body_limit_is_413_without_100() {
    let b = Backend::echo().start();
    let rw = Ringway::start(set(catch_all("ROUND_ROBIN", &[&b]), "limits", "maxBodyBytes", json!(3)));
    let mut c = Client::connect(rw.addr());
    c.send(EXPECT_HEAD);
    let r = c.response();
    assert_eq!(r.status, 413, "{}", r.head);
    assert_eq!(b.request_count(), 0);
}

// ---------------------------------------------------------------------------
// Backend host names
// ---------------------------------------------------------------------------

#[test]
fn backend_host_name_is_resolved() {
    let b = Backend::respond(200, "by-name").start();
    let backend = json!({"id": "named", "hostname": "localhost", "port": b.port()});
    let rw = Ringway::start(config(vec![route("*", "ROUND_ROBIN", vec![backend])]));
    let r = get(rw.addr(), "x", "/");
    assert_eq!((r.status, r.text()), (200, "by-name".to_string()), "{}", r.head);
    assert_eq!(b.request_count(), 1);
}

#[test]
fn unresolvable_backend_is_down_and_ringway_still_starts() {
    let backend = json!({"id": "ghost", "hostname": "does-not-exist.invalid", "port": 80});
    let rw = Ringway::start(config(vec![route("*", "ROUND_ROBIN", vec![backend])]));
    for i in 0..3 {
        let r = get(rw.addr(), "x", "/");
        assert_eq!(r.status, 503, "request {i}:\n{}", r.head);
    }
}

// ---------------------------------------------------------------------------
// limits.maxConnections
// ---------------------------------------------------------------------------

/// One GET on a new connection; `None` when the connection is refused or closed.
fn try_get(addr: std::net::SocketAddr) -> Option<Response> {
    let mut c = Client::connect(addr);
    c.stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    c.try_send(b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    c.read_response(false).ok()
}

#[test]
fn connections_over_max_connections_are_closed_at_once() {
    let b = Backend::respond(200, "ok").start();
    let cfg = with_admin(set(catch_all("ROUND_ROBIN", &[&b]), "limits", "maxConnections", json!(3)), None);
    let rw = Ringway::start(cfg);
    let mut open: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = Client::connect(rw.addr());
            assert_eq!(c.get("x", &format!("/keep-{i}")).status, 200, "connection {i}");
            c
        })
        .collect();

    let mut fourth = Client::connect(rw.addr());
    let t0 = Instant::now();
    assert!(fourth.closed_within(Duration::from_secs(2)), "a 4th connection was not closed within 2 s");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Counted (the admin listener is not subject to the proxy's limit).
    let stats = rw.api().get("/api/v1/stats").expect(200, "stats");
    assert!(stats.json["rejectedConnections"].as_u64().unwrap_or(0) >= 1, "{}", stats.json);
    // The three admitted connections still work.
    for (i, c) in open.iter_mut().enumerate() {
        assert_eq!(c.get("x", &format!("/still-{i}")).status, 200, "connection {i} after the 4th was refused");
    }

    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match try_get(rw.addr()) {
            Some(r) if r.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no new connection was served within 2 s of closing one (last: {:?})",
                other.map(|r| r.head)
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Active health checks
// ---------------------------------------------------------------------------

fn checked(backends: &[&BackendHandle]) -> Value {
    let mut r = route("*", "ROUND_ROBIN", backends.iter().map(|b| b.config()).collect());
    r["health"] = json!({"intervalMs": 100, "timeoutMs": 200, "rise": 2, "fall": 2, "path": "/health"});
    config(vec![r])
}

/// Who served `r` (its x-backend header).
fn served_by(r: &Response) -> String {
    r.header("x-backend").unwrap_or("-").to_string()
}

/// Polls every 20 ms until `runs` answers in a row come from `only`; panics after `within`.
fn wait_until_only(addr: std::net::SocketAddr, only: &str, runs: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let mut streak = 0;
    let mut last = Vec::new();
    while streak < runs {
        assert!(Instant::now() < deadline, "traffic did not settle on {only} within {within:?}; last: {last:?}");
        let r = get(addr, "x", "/");
        last.push((r.status, served_by(&r)));
        if served_by(&r) == only && r.status == 200 {
            streak += 1;
        } else {
            streak = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failing_health_checks_take_a_backend_out() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(500, "b").named("b").start();
    let rw = Ringway::start(checked(&[&a, &b]));
    wait_until_only(rw.addr(), "a", 6, Duration::from_secs(3));
    let b_before = b.proxied_count();
    for i in 0..50 {
        let r = get(rw.addr(), "x", &format!("/{i}"));
        assert_eq!((r.status, served_by(&r)), (200, "a".to_string()), "request {i}");
    }
    assert_eq!(b.proxied_count(), b_before, "b got traffic after it was taken out");
    assert!(b.request_count() > b.proxied_count(), "b was never probed");
    assert!(
        b.requests().iter().filter(|r| is_probe(r)).all(|r| r.target == "/health"),
        "probes did not use the configured path"
    );
}

#[test]
fn health_checks_take_a_backend_out_and_bring_it_back() {
    let a = Backend::respond(200, "a").named("a").start();
    let status = Arc::new(AtomicU16::new(200));
    let b = Backend::switchable(status.clone(), "b").named("b").start();
    let rw = Ringway::start(checked(&[&a, &b]));
    // Both serve while healthy.
    for i in 0..4 {
        assert_eq!(get(rw.addr(), "x", &format!("/{i}")).status, 200);
    }
    assert!(b.proxied_count() > 0, "b got no traffic while healthy");

    status.store(500, Ordering::SeqCst);
    wait_until_only(rw.addr(), "a", 6, Duration::from_millis(1500));
    let b_out = b.proxied_count();
    for i in 0..10 {
        let r = get(rw.addr(), "x", &format!("/out-{i}"));
        assert_eq!((r.status, served_by(&r)), (200, "a".to_string()), "request {i} while b is out");
    }
    assert_eq!(b.proxied_count(), b_out);

    status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = get(rw.addr(), "x", "/back");
        assert_eq!(r.status, 200, "{}", r.head);
        if served_by(&r) == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "b got no traffic within 2 s of passing its checks again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Passive failure
// ---------------------------------------------------------------------------

#[test]
fn refused_backend_is_taken_out_passively() {
    let h = Backend::respond(200, "ok").named("healthy").start();
    let dead = json!({"id": "dead", "hostname": "127.0.0.1", "port": refused_port()});
    let mut r = route("*", "ROUND_ROBIN", vec![dead, h.config()]);
    r["health"] = json!({"intervalMs": 0, "failTimeoutMs": 60000});
    let rw = Ringway::start_logging(config(vec![r]), 1, "debug");
    for i in 0..20 {
        let r = get(rw.addr(), "x", &format!("/{i}"));
        assert_eq!((r.status, r.text()), (200, "ok".to_string()), "request {i}:\n{}", r.head);
    }
    assert_eq!(h.request_count(), 20);
    // The failed attempt on the dead backend shows in the debug log (written asynchronously).
    let deadline = Instant::now() + Duration::from_secs(2);
    while !rw.log().lines().any(|l| l.contains("backend=dead") && (l.contains("passive") || l.contains("up=false"))) {
        assert!(
            Instant::now() < deadline,
            "the debug log never reports a passive failure of backend dead:\n{}",
            rw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
