//! Per-route admission: the active limit, the bounded queue and its wait.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// A catch-all route over `b` with admission limits.
fn limited(b: &BackendHandle, active: u32, queue: u32, queue_ms: u64) -> Value {
    let mut r = route("*", "ROUND_ROBIN", vec![b.config()]);
    r["reqActiveLength"] = json!(active);
    r["reqQueueLength"] = json!(queue);
    set(config(vec![r]), "timeouts", "queueMs", json!(queue_ms))
}

/// `n` GETs on `n` connections, sent together; each answer with the time it took.
fn concurrent_gets(addr: std::net::SocketAddr, n: usize) -> Vec<(Response, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                let t0 = Instant::now();
                c.send(format!("GET /{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
                let r = c.response();
                (r, t0.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client thread")).collect()
}

#[test]
fn over_the_limit_requests_queue_then_get_503_with_retry_after() {
    let b = Backend::respond(200, "slow").delayed(Duration::from_secs(1)).start();
    let rw = Ringway::start(limited(&b, 2, 2, 300));
    let results = concurrent_gets(rw.addr(), 6);
    let summary: Vec<(u16, Duration)> = results.iter().map(|(r, t)| (r.status, *t)).collect();

    let ok: Vec<Duration> = results.iter().filter(|(r, _)| r.status == 200).map(|(_, t)| *t).collect();
    let mut refused: Vec<Duration> = results.iter().filter(|(r, _)| r.status == 503).map(|(_, t)| *t).collect();
    refused.sort();
    assert_eq!((ok.len(), refused.len()), (2, 4), "(status, time) of each answer: {summary:?}");
    for (r, _) in results.iter().filter(|(r, _)| r.status == 503) {
        assert!(r.header("retry-after").is_some(), "503 without retry-after:\n{}", r.head);
    }
    // The two admitted ones waited for the slow backend.
    for t in &ok {
        assert!(*t >= Duration::from_millis(900), "200 after {t:?}; {summary:?}");
        assert!(*t < Duration::from_secs(3), "200 after {t:?}; {summary:?}");
    }
    // Two were refused at once (queue full), two after their 300 ms wait.
    for t in &refused[..2] {
        assert!(*t < Duration::from_millis(250), "immediate 503 took {t:?}; {summary:?}");
    }
    for t in &refused[2..] {
        assert!(
            *t >= Duration::from_millis(280) && *t < Duration::from_millis(900),
            "queued 503 after {t:?} (queueMs 300); {summary:?}"
        );
    }
    assert_eq!(b.request_count(), 2, "only the admitted requests reach the backend");
}

#[test]
fn per_route_queue_ms_overrides_the_global_one() {
    let b = Backend::respond(200, "slow").delayed(Duration::from_secs(1)).start();
    // Global queueMs 5000, route queueMs 200: the queued request gives up after ~200 ms.
    let mut cfg = limited(&b, 1, 1, 5000);
    cfg["routes"][0]["queueMs"] = json!(200);
    let rw = Ringway::start(cfg);
    let results = concurrent_gets(rw.addr(), 2);
    let summary: Vec<(u16, Duration)> = results.iter().map(|(r, t)| (r.status, *t)).collect();
    let refused: Vec<Duration> = results.iter().filter(|(r, _)| r.status == 503).map(|(_, t)| *t).collect();
    assert_eq!(refused.len(), 1, "{summary:?}");
    assert!(
        refused[0] >= Duration::from_millis(180) && refused[0] < Duration::from_millis(800),
        "queued 503 after {:?} (route queueMs 200); {summary:?}",
        refused[0]
    );
}

#[test]
fn queued_requests_are_served_one_at_a_time() {
    let b = Backend::respond(200, "one").delayed(Duration::from_millis(200)).start();
    let rw = Ringway::start(limited(&b, 1, 5, 5000));
    let t0 = Instant::now();
    let results = concurrent_gets(rw.addr(), 4);
    let took = t0.elapsed();
    let summary: Vec<(u16, Duration)> = results.iter().map(|(r, t)| (r.status, *t)).collect();
    assert!(results.iter().all(|(r, _)| r.status == 200), "{summary:?}");
    assert_eq!(b.request_count(), 4);
    assert_eq!(b.max_in_flight(), 1, "the backend held more than one request at once; {summary:?}");
    assert!(took >= Duration::from_millis(750), "4 × 200 ms one at a time took only {took:?}");
}
