//! Live configuration changes through the admin API while traffic flows:
//! nothing in flight is disturbed, pooled upstream connections survive
//! unrelated changes, and health news reaches every worker.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

fn admin_config(routes: Vec<Value>) -> Value {
    with_admin(config(routes), None)
}

/// A backend entry without an id (the API assigns one).
fn anon(b: &BackendHandle) -> Value {
    json!({"hostname": "127.0.0.1", "port": b.port()})
}

// ---------------------------------------------------------------------------
// 1. Changes never disturb traffic
// ---------------------------------------------------------------------------

#[test]
fn api_changes_never_disturb_unrelated_traffic() {
    const THREADS: usize = 4;
    const MAX_PER_THREAD: usize = 20_000;
    const MIN_LOAD: Duration = Duration::from_secs(2);
    const MAX_LOAD: Duration = Duration::from_secs(30);
    let s1 = Backend::respond(200, "s1").named("s1").start();
    let s2 = Backend::respond(200, "s2").named("s2").start();
    let o1 = Backend::respond(200, "o1").named("o1").start();
    let extra = Backend::respond(200, "extra").named("extra").start();
    let churn = Backend::respond(200, "churn").named("churn").start();
    let rw = Ringway::start_workers(
        admin_config(vec![
            route("stable.test", "ROUND_ROBIN", vec![s1.config(), s2.config()]),
            route("other.test", "ROUND_ROBIN", vec![o1.config()]),
        ]),
        2,
    );
    let addr = rw.addr();
    let changes_done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..THREADS)
        .map(|t| {
            let changes_done = changes_done.clone();
            let started = started.clone();
            thread::spawn(move || {
                let t0 = Instant::now();
                let mut ok = 0usize;
                let mut failures: Vec<String> = Vec::new();
                let mut c = Client::connect(addr);
                started.fetch_add(1, Ordering::SeqCst);
                for i in 0..MAX_PER_THREAD {
                    let done = changes_done.load(Ordering::SeqCst) && t0.elapsed() >= MIN_LOAD;
                    if done || t0.elapsed() >= MAX_LOAD || failures.len() >= 20 {
                        break;
                    }
                    let req = format!("GET /t{t}/{i} HTTP/1.1\r\nHost: stable.test\r\n\r\n");
                    let answer = c.try_send(req.as_bytes()).and_then(|_| c.read_response(false));
                    match answer {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failures.push(format!("thread {t} request {i}: status {}", r.status)),
                        Err(e) => {
                            failures.push(format!("thread {t} request {i}: {e}"));
                            c = Client::connect(addr);
                        }
                    }
                }
                (ok, failures)
            })
        })
        .collect();

    // Let every load thread get going (bounded), then change things.
    let t0 = Instant::now();
    while started.load(Ordering::SeqCst) < THREADS && t0.elapsed() < Duration::from_secs(10) {
        thread::yield_now();
    }
    let api = rw.api();
    let mut changes = 0;
    for i in 0..30 {
        let vhost = format!("churn-{i}.test");
        let body = json!({"vHost": vhost, "strategy": "ROUND_ROBIN", "backends": [anon(&churn)]});
        api.post("/api/v1/routes", &body).expect(201, &format!("POST route {vhost}"));
        api.delete(&format!("/api/v1/routes/{vhost}")).expect(204, &format!("DELETE route {vhost}"));
        changes += 2;
        if i % 10 == 0 {
            let r = api.post("/api/v1/routes/other.test/backends", &anon(&extra)).expect(201, "POST a backend");
            let id = r.json["id"].as_str().unwrap_or_else(|| panic!("no id assigned: {}", r.json)).to_string();
            api.delete(&format!("/api/v1/routes/other.test/backends/{id}")).expect(204, "DELETE the backend");
            changes += 2;
        }
    }
    let changes_took = t0.elapsed();
    changes_done.store(true, Ordering::SeqCst);

    let mut total = 0;
    let mut failures = Vec::new();
    for h in load {
        let (ok, f) = h.join().expect("load thread");
        total += ok;
        failures.extend(f);
    }
    assert!(failures.is_empty(), "stable.test failed during {changes} API changes: {failures:?}");
    assert!(total >= THREADS * 10, "only {total} requests served in all");
    assert_eq!(s1.proxied_count() + s2.proxied_count(), total);
    assert!(s1.proxied_count() > 0 && s2.proxied_count() > 0, "both stable backends serve");
    assert!(changes_took < Duration::from_secs(60), "{changes} changes took {changes_took:?}");
    // The churned routes are gone, the other route kept its backend.
    assert_eq!(api.vhosts(), vec!["stable.test".to_string(), "other.test".to_string()]);
    assert_eq!(get(addr, "churn-0.test", "/").status, 404);
}

// ---------------------------------------------------------------------------
// 2. Pools survive unrelated changes
// ---------------------------------------------------------------------------

#[test]
fn pooled_upstream_connections_survive_unrelated_changes() {
    let x = Backend::respond(200, "x").named("x").start();
    let y = Backend::respond(200, "y").named("y").start();
    let z = Backend::respond(200, "z").named("z").start();
    let rw = Ringway::start_workers(
        admin_config(vec![
            route("x.test", "ROUND_ROBIN", vec![x.config()]),
            route("y.test", "ROUND_ROBIN", vec![y.config()]),
        ]),
        1,
    );
    let addr = rw.addr();
    let mut keep = Client::connect(addr);
    for i in 0..20 {
        let r = keep.get("x.test", &format!("/before-{i}"));
        assert_eq!(r.status, 200, "request {i}:\n{}", r.head);
    }
    let before = x.connections();
    assert!(before >= 1, "x saw no connection");

    // Five changes that do not touch x.test.
    let api = rw.api();
    let body = |v: &str| json!({"vHost": v, "strategy": "ROUND_ROBIN", "backends": [anon(&z)]});
    api.post("/api/v1/routes", &body("n1.test")).expect(201, "POST n1.test");
    api.post("/api/v1/routes", &body("n2.test")).expect(201, "POST n2.test");
    api.delete("/api/v1/routes/n1.test").expect(204, "DELETE n1.test");
    api.post("/api/v1/routes/y.test/backends", &anon(&z)).expect(201, "POST a backend to y.test");
    api.delete("/api/v1/routes/n2.test").expect(204, "DELETE n2.test");

    for i in 0..10 {
        let r = keep.get("x.test", &format!("/after-{i}"));
        assert_eq!(r.status, 200, "request {i} after the changes:\n{}", r.head);
    }
    // New client connections (keep-alive, so nothing asks for a close upstream).
    for i in 0..5 {
        let mut c = Client::connect(addr);
        for j in 0..2 {
            let r = c.get("x.test", &format!("/fresh-{i}-{j}"));
            assert_eq!(r.status, 200, "request {i}/{j} on a new connection:\n{}", r.head);
        }
    }
    assert_eq!(x.proxied_count(), 40);
    assert_eq!(
        x.connections(),
        before,
        "ringway opened new upstream connections to x after changes that did not touch x.test"
    );
}

// ---------------------------------------------------------------------------
// 3. In-flight requests to a removed backend complete
// ---------------------------------------------------------------------------

#[test]
fn in_flight_request_to_a_removed_backend_completes() {
    let slow = Backend::respond(200, "slow").named("slow").delayed(Duration::from_millis(800)).start();
    let rw = Ringway::start_workers(admin_config(vec![route("gone.test", "ROUND_ROBIN", vec![slow.config()])]), 2);
    let addr = rw.addr();
    let t0 = Instant::now();
    let inflight = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /slow HTTP/1.1\r\nHost: gone.test\r\nConnection: close\r\n\r\n");
        c.read_response(false).map(|r| (r.status, r.text()))
    });
    slow.wait_for_requests(1, Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_millis(700), "the request reached the backend only after {:?}", t0.elapsed());
    rw.api().delete("/api/v1/routes/gone.test/backends/slow").expect(204, "DELETE the busy backend");
    let answer = inflight.join().expect("client thread");
    let (status, body) =
        answer.unwrap_or_else(|e| panic!("the in-flight request failed after its backend was removed: {e}"));
    assert_eq!((status, body.as_str()), (200, "slow"), "the in-flight request after its backend was removed");
    // The removed backend gets no more traffic.
    let _ = get(addr, "gone.test", "/after");
    assert_eq!(slow.proxied_count(), 1);
}

// ---------------------------------------------------------------------------
// 4. A passive failure reaches every worker
// ---------------------------------------------------------------------------

#[test]
fn passive_failure_on_one_worker_is_seen_everywhere() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = json!({"id": "b", "hostname": "127.0.0.1", "port": refused_port()});
    let mut r = route("pf.test", "ROUND_ROBIN", vec![a.config(), b]);
    // Active checks on, but with a `fall` no test run reaches: only the
    // passive failure can take b down within this test.
    r["health"] = json!({"intervalMs": 200, "fall": 1000});
    let rw = Ringway::start_workers(admin_config(vec![r]), 2);
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(get(rw.addr(), "pf.test", &format!("/{i}")).status);
    }
    assert!(statuses.iter().all(|s| *s == 200), "retries should cover b: {statuses:?}");
    let s = rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
    let entry = s["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|e| e["route"] == "pf.test" && e["id"] == "b"))
        .unwrap_or_else(|| panic!("no backend pf.test/b in {}", s["backends"]));
    assert_eq!(entry["state"], "down", "b after refused connects: {entry}");
    let a_entry = s["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|e| e["route"] == "pf.test" && e["id"] == "a"))
        .unwrap_or_else(|| panic!("no backend pf.test/a in {}", s["backends"]));
    assert_eq!(a_entry["state"], "up", "{a_entry}");
}
