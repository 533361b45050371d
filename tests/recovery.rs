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
