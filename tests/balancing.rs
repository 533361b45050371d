//! Balancing strategies, observed with one worker.

mod support;

use std::time::Duration;
use support::*;

fn three(prefix: &str) -> Vec<BackendHandle> {
    (0..3).map(|i| Backend::respond(200, "ok").named(&format!("{prefix}{i}")).start()).collect()
}

/// `n` sequential GETs on one keep-alive connection; all must be 200.
fn sequential(rw: &Ringway, n: usize) {
    let mut c = Client::connect(rw.addr());
    for i in 0..n {
        assert_eq!(c.get("x", &format!("/{i}")).status, 200, "request {i}");
    }
}

/// `threads` × `each` GETs from concurrent keep-alive connections; all must be 200.
fn concurrent(rw: &Ringway, threads: usize, each: usize) {
    let addr = rw.addr();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..each {
                    assert_eq!(c.get("x", &format!("/{t}/{i}")).status, 200, "thread {t} request {i}");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("client thread");
    }
}

fn per_backend(bs: &[BackendHandle]) -> Vec<usize> {
    bs.iter().map(|b| b.request_count()).collect()
}

#[test]
fn round_robin_cycles_evenly() {
    let bs = three("rr");
    let rw = Ringway::start(config(vec![route("*", "ROUND_ROBIN", bs.iter().map(|b| b.config()).collect())]));
    sequential(&rw, 300);
    assert_eq!(per_backend(&bs), vec![100, 100, 100]);
}

#[test]
fn weighted_round_robin_follows_weights() {
    let bs = three("w");
    let backends = vec![bs[0].weighted(5), bs[1].weighted(1), bs[2].weighted(1)];
    let rw = Ringway::start(config(vec![route("*", "WEIGHTED_ROUND_ROBIN", backends)]));
    sequential(&rw, 700);
    assert_eq!(per_backend(&bs), vec![500, 100, 100]);
}

#[test]
fn ip_hash_sticks_to_one_backend() {
    let bs = three("ip");
    let rw = Ringway::start(config(vec![route("*", "IP_HASH", bs.iter().map(|b| b.config()).collect())]));
    sequential(&rw, 60);
    for i in 0..40 {
        assert_eq!(get(rw.addr(), "x", &format!("/fresh/{i}")).status, 200);
    }
    let counts = per_backend(&bs);
    assert_eq!(counts.iter().filter(|&&n| n > 0).count(), 1, "requests from 127.0.0.1 spread: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 100);
}

fn spreads(strategy: &str) {
    let bs = three(strategy);
    let rw = Ringway::start(config(vec![route("*", strategy, bs.iter().map(|b| b.config()).collect())]));
    concurrent(&rw, 6, 50);
    let counts = per_backend(&bs);
    assert_eq!(counts.iter().sum::<usize>(), 300, "{counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "{strategy}: a backend got no traffic: {counts:?}");
}

#[test]
fn least_connections_uses_every_backend() {
    spreads("LEAST_CONNECTIONS");
}

#[test]
fn random_uses_every_backend() {
    spreads("RANDOM");
}

#[test]
fn least_latency_uses_every_backend() {
    spreads("LEAST_LATENCY");
}

#[test]
fn least_latency_avoids_a_slow_backend() {
    let slow = Backend::respond(200, "slow").named("slow").delayed(Duration::from_millis(50)).start();
    let fast1 = Backend::respond(200, "fast").named("fast1").start();
    let fast2 = Backend::respond(200, "fast").named("fast2").start();
    let rw =
        Ringway::start(config(vec![route("*", "LEAST_LATENCY", vec![slow.config(), fast1.config(), fast2.config()])]));
    sequential(&rw, 200);
    let n = slow.request_count();
    assert!(
        n < 40,
        "slow backend got {n} of 200 requests (fast: {}, {})",
        fast1.request_count(),
        fast2.request_count()
    );
}
