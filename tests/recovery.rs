//! Prompt recovery and well-behaved health probes (issue 11): a backend
//! that went down is probed on its own fast schedule, whatever the normal
//! interval; probes name the backend's own host:port and ringway's version.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_restarted_backend_is_back_within_rise_down_intervals_despite_a_slow_interval() {
    let mut b = Backend::respond(200, "b").named("b").start();
    let port = b.port();
    let mut r = route("x", "ROUND_ROBIN", vec![b.config()]);
    // Ten minutes between normal checks: without a down schedule the
    // backend would stay out that long after a restart.
    r["health"] = json!({"intervalMs": 600000, "downIntervalMs": 200, "rise": 2, "fall": 3});
    let rw = Ringway::start(config(vec![r]));
    assert_eq!(get(rw.addr(), "x", "/").status, 200);

    b.stop();
    // The refused connect takes it out (passive failure).
    let status = get(rw.addr(), "x", "/").status;
    assert!(status == 502 || status == 503, "with its only backend gone: {status}");

    let _b = Backend::respond(200, "b").named("b").start_on(port);
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(5);
    loop {
        let r = get(rw.addr(), "x", "/");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not back within 5 s of the restart (last status {})", r.status);
        std::thread::sleep(Duration::from_millis(50));
    }
    // rise (2) × downIntervalMs (200 ms ± 10 %) plus the probe itself.
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(3), "back after {took:?}");
}

#[test]
fn probes_name_the_backends_host_and_port_and_ringways_version() {
    let b = Backend::respond(200, "b").named("b").start();
    let mut r = route("probe.test", "ROUND_ROBIN", vec![b.config()]);
    r["health"] = json!({"intervalMs": 100, "path": "/hc"});
    let _rw = Ringway::start(config(vec![r]));
    b.wait_for_requests(1, Duration::from_secs(5));
    let probe = b.requests().into_iter().find(is_probe).expect("no probe seen");
    assert_eq!(probe.header("host"), Some(format!("127.0.0.1:{}", b.port())), "{}", probe.head);
    let ua = probe.header("user-agent").unwrap_or_default();
    assert_eq!(ua, format!("ringway-health/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(probe.header("connection").as_deref(), Some("close"));

    // health.host overrides the Host.
    let c = Backend::respond(200, "c").named("c").start();
    let mut r = route("probe2.test", "ROUND_ROBIN", vec![c.config()]);
    r["health"] = json!({"intervalMs": 100, "host": "status.internal"});
    let _rw2 = Ringway::start(config(vec![r]));
    c.wait_for_requests(1, Duration::from_secs(5));
    let probe = c.requests().into_iter().find(is_probe).expect("no probe seen");
    assert_eq!(probe.header("host").as_deref(), Some("status.internal"));
}

/// The health state the stats API reports for `vhost`'s first backend,
/// polled until it is `want` (bounded); returns the last one seen.
fn state_becomes(rw: &Ringway, vhost: &str, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let s = rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
        let state = s["backends"]
            .as_array()
            .and_then(|bs| {
                bs.iter().find(|e| e["route"] == vhost).map(|e| e["state"].as_str().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        if state == want || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tcp_checks_body_checks_methods_and_headers() {
    let silent = Backend::silent().start();
    let good = Backend::respond(200, "all good here").start();
    let checked = |vhost: &str, b: &BackendHandle, health: Value| {
        let mut r = route(vhost, "ROUND_ROBIN", vec![b.config()]);
        let mut h = json!({"intervalMs": 100, "timeoutMs": 300, "rise": 1, "fall": 1});
        h.as_object_mut().unwrap().extend(health.as_object().unwrap().clone());
        r["health"] = h;
        r
    };
    let routes = vec![
        checked("tcp.test", &silent, json!({"type": "tcp"})),
        checked("http.test", &silent, json!({})),
        checked("body-ok.test", &good, json!({"expectBody": "good"})),
        checked("body-missing.test", &good, json!({"expectBody": "ready"})),
        checked("head.test", &good, json!({"method": "HEAD", "headers": {"X-Probe": "1"}})),
    ];
    let rw = Ringway::start(with_admin(config(routes), None));
    let w = Duration::from_secs(5);
    assert_eq!(state_becomes(&rw, "http.test", "down", w), "down", "a silent backend fails HTTP checks");
    assert_eq!(state_becomes(&rw, "body-missing.test", "down", w), "down", "the body lacks the text");
    assert_eq!(state_becomes(&rw, "tcp.test", "up", w), "up", "it accepts connections");
    assert_eq!(state_becomes(&rw, "body-ok.test", "up", w), "up");
    assert_eq!(state_becomes(&rw, "head.test", "up", w), "up");
    let head_probe = good
        .requests()
        .into_iter()
        .find(|r| is_probe(r) && r.method == "HEAD")
        .expect("a HEAD probe reached the backend");
    assert_eq!(head_probe.header("x-probe").as_deref(), Some("1"), "{}", head_probe.head);
}

#[test]
fn panic_mode_spreads_over_all_backends_when_too_few_are_healthy() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    // Checks that nothing passes: every backend is marked down, though
    // each would answer.
    let failing = json!({"intervalMs": 100, "rise": 1, "fall": 1, "expectStatus": 299});
    let mut panicky = route("panic.test", "ROUND_ROBIN", vec![a.config(), b.config()]);
    panicky["health"] = failing.clone();
    panicky["panicThresholdPercent"] = json!(50);
    let mut strict = route("strict.test", "ROUND_ROBIN", vec![a.config(), b.config()]);
    strict["health"] = failing;
    let rw = Ringway::start(with_admin(config(vec![panicky, strict]), None));
    let w = Duration::from_secs(5);
    assert_eq!(state_becomes(&rw, "strict.test", "down", w), "down");
    assert_eq!(state_becomes(&rw, "panic.test", "down", w), "down");
    // Both backends of the strict route go down: then it answers 503.
    let deadline = Instant::now() + w;
    while get(rw.addr(), "strict.test", "/").status != 503 {
        assert!(Instant::now() < deadline, "strict.test never answered 503 with no healthy backend");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut served = std::collections::HashSet::new();
    for i in 0..6 {
        let r = get(rw.addr(), "panic.test", &format!("/{i}"));
        assert_eq!(r.status, 200, "panic mode serves from all backends");
        served.insert(r.header("x-backend").unwrap_or("-").to_string());
    }
    assert_eq!(served.len(), 2, "spread over both: {served:?}");
}
