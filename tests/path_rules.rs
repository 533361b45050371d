//! Path rules override what their route does (issue 11): timeouts,
//! retries, the body limit and health checks, field by field, validated
//! and shown in the running config.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_path_rule_overrides_its_routes_timeouts_and_body_limit() {
    let slow = Backend::respond(200, "slow").delayed(Duration::from_millis(600)).start();
    let small = Backend::echo().start();
    let mut r = route("x", "ROUND_ROBIN", vec![slow.config()]);
    r["upstreamMs"] = json!(5000);
    r["paths"] = json!([
        {"prefix": "/fast", "backends": [{"id": "f", "hostname": "127.0.0.1", "port": slow.port()}],
         "upstreamMs": 150, "retries": 0},
        {"prefix": "/small", "backends": [small.config()], "maxBodyBytes": 10},
    ]);
    let rw = Ringway::start(with_admin(config(vec![r]), None));
    assert_eq!(get(rw.addr(), "x", "/").status, 200, "the route's 5 s upstream timeout");
    assert_eq!(get(rw.addr(), "x", "/fast/a").status, 504, "the rule's 150 ms");

    let post = |path: &str, len: usize| {
        let body = "y".repeat(len);
        exchange(
            rw.addr(),
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n{body}").as_bytes(),
        )
    };
    assert_eq!(post("/small/p", 20).status, 413, "the rule's 10-byte limit");
    assert_eq!(post("/small/p", 10).status, 200);

    // The running config shows the overrides, and only those.
    let (_, cfg) = rw.api().config();
    let paths = &cfg["routes"][0]["paths"];
    assert_eq!(paths[0]["upstreamMs"], 150, "{paths}");
    assert_eq!(paths[0]["retries"], 0, "{paths}");
    assert_eq!(paths[1]["maxBodyBytes"], 10, "{paths}");
    assert!(paths[1]["upstreamMs"].is_null(), "not overridden: {paths}");
}

#[test]
fn a_path_rules_backends_follow_its_health_settings() {
    let plain = Backend::respond(200, "a").start();
    let checked = Backend::respond(200, "b").start();
    let mut r = route("x", "ROUND_ROBIN", vec![plain.config()]);
    r["health"] = json!({"intervalMs": 0});
    r["paths"] = json!([{"prefix": "/api", "backends": [checked.config()],
                         "health": {"intervalMs": 100, "path": "/rule-health"}}]);
    let _rw = Ringway::start(config(vec![r]));
    checked.wait_for_requests(1, Duration::from_secs(5));
    let probes: Vec<_> = checked.requests().into_iter().filter(is_probe).collect();
    assert!(!probes.is_empty(), "the rule's backend is probed");
    assert!(probes.iter().all(|p| p.target == "/rule-health"), "with the rule's path");
    assert_eq!(plain.requests().iter().filter(|r| is_probe(r)).count(), 0, "the route's checks stay off");
}

#[test]
fn bad_path_rule_overrides_name_their_field() {
    let b = Backend::respond(200, "a").start();
    let mut r = route("x", "ROUND_ROBIN", vec![b.config()]);
    r["paths"] = json!([{"prefix": "/p", "backends": [], "retries": 99, "upstreamMs": 0,
                         "health": {"rise": 0}}]);
    let (code, out) = ringway_check(&config(vec![r]));
    assert_ne!(code, 0, "{out}");
    for field in ["routes[0].paths[0].retries", "routes[0].paths[0].upstreamMs", "routes[0].paths[0].health.rise"] {
        assert!(out.contains(field), "{field} not named:\n{out}");
    }
}
