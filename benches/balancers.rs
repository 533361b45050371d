//! Balancer pick throughput. Meant to become `benches/balancers.rs` in the
//! main crate, with in Cargo.toml:
//!
//! ```toml
//! [[bench]]
//! name = "balancers"
//! harness = false
//! ```
//!
//! Run with `cargo bench --bench balancers`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ringway::balance::{Balancer, Node, Strategy, Tried};

const NODES: usize = 8;
const PICKS: u64 = 10_000_000;
/// `cargo test --all-targets` runs benches once without `--bench`: then a
/// smoke run is enough to prove the bench still works.
fn picks() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        PICKS
    } else {
        1000
    }
}

fn main() {
    let strategies = [
        Strategy::RoundRobin,
        Strategy::WeightedRoundRobin,
        Strategy::LeastConnections,
        Strategy::Random,
        Strategy::IpHash,
        Strategy::LeastLatency,
    ];
    for strategy in strategies {
        let nodes: Vec<Node> = (0..NODES).map(|i| Node::new(&format!("backend-{i}"), 1 + (i as u32 % 3))).collect();
        // Give least-connections / P2C / least-latency something to compare.
        let now = Instant::now();
        for (i, n) in nodes.iter().enumerate() {
            for _ in 0..(i % 4) {
                n.start();
            }
            n.start();
            n.finish(Duration::from_micros(200 + 50 * i as u64), now);
        }
        let balancer = Balancer::build(strategy, &nodes);

        // Warm up.
        for i in 0..100_000u32 {
            black_box(balancer.pick(black_box(&nodes), client(i), Tried::default()));
        }

        let start = Instant::now();
        let mut acc = 0usize;
        for i in 0..picks() {
            let picked = balancer.pick(black_box(&nodes), client(i as u32), Tried::default());
            acc = acc.wrapping_add(picked.unwrap_or(usize::MAX));
        }
        let elapsed = start.elapsed();
        black_box(acc);
        println!(
            "{:<20} {:>8.2} ns/pick  ({} picks over {} nodes in {:?})",
            format!("{strategy:?}"),
            elapsed.as_nanos() as f64 / picks() as f64,
            picks(),
            NODES,
            elapsed
        );
    }
}

/// Distinct, spread-out client addresses (matters for IpHash).
fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
}
