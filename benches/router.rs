//! Route lookup: 1 → 10,000 routes, exact and wildcard hosts.
//! `cargo bench --bench router` (under `cargo test` it runs a smoke pass).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use control::messages::Snapshot;
use control::model::parse_config;
use ringway::worker::{Shared, Worker};

fn iters() -> u32 {
    if std::env::args().any(|a| a == "--bench") {
        2_000_000
    } else {
        1000
    }
}

fn worker_with(routes: usize, wildcard: bool) -> Worker {
    let list: Vec<String> = (0..routes)
        .map(|i| {
            let host = if wildcard { format!("*.h{i}.example.com") } else { format!("h{i}.example.com") };
            format!(r#"{{"vHost":"{host}","backends":[{{"hostname":"127.0.0.1","port":9}}]}}"#)
        })
        .collect();
    let text = format!(r#"{{"routes":[{}]}}"#, list.join(","));
    let config = parse_config(&text).expect("bench config is valid");
    let snap = Snapshot {
        generation: 1,
        routes: config.routes.into_iter().map(std::sync::Arc::new).collect(),
        resolved: Vec::new(),
        down: Default::default(),
        timeouts: config.timeouts,
        limits: config.limits,
        http2: config.http2,
        tls: None,
    };
    let (tx, _rx) = crossbeam_channel::unbounded();
    let w = Worker::new(0, tx, Arc::new(Shared::default()), 1, None);
    w.apply(&snap);
    w
}

fn main() {
    for &n in &[1usize, 100, 10_000] {
        for wildcard in [false, true] {
            let w = worker_with(n, wildcard);
            let active = w.active();
            let hosts: Vec<Vec<u8>> = (0..64)
                .map(|i| {
                    let k = (i * 7919) % n;
                    if wildcard { format!("api.h{k}.example.com:8080") } else { format!("H{k}.Example.com:8080") }
                        .into_bytes()
                })
                .collect();
            let start = Instant::now();
            let mut hits = 0usize;
            for i in 0..iters() {
                let h = &hosts[i as usize % hosts.len()];
                if active.router.lookup(Some(black_box(h))).is_some() {
                    hits += 1;
                }
            }
            let el = start.elapsed();
            assert_eq!(hits, iters() as usize, "every lookup must hit");
            println!(
                "{:>6} routes {:8}: {:7.1} ns/lookup",
                n,
                if wildcard { "wildcard" } else { "exact" },
                el.as_nanos() as f64 / f64::from(iters())
            );
        }
    }
}
