//! Least latency with peak EWMA (as in Finagle / linkerd).
//!
//! Each [`Node`] keeps a peak-EWMA round-trip estimate updated by
//! [`Node::finish`] (tau = [`super::EWMA_TAU`]). The cost of a node is
//! `estimate * (inflight + 1) / weight`. A node without samples costs 0 while
//! idle, so new backends are tried right away; once it has requests in flight
//! but still no sample (or an estimate that decayed to exactly 0) it costs a
//! large penalty times its in-flight count, so a cold or black-holed backend
//! gets one probe at a time instead of a burst. Small pools (<= 4 nodes) are
//! scanned fully; larger ones use the power of two choices on cost (uniform
//! sampling, the weight is already in the cost). Latencies and in-flight
//! counts are this worker's own observations.

use std::cell::Cell;
use std::time::Instant;

use super::{eligible, AsNode, Node, Rng, Tried};

/// Pools up to this size are scanned fully instead of sampled.
const FULL_SCAN_MAX: usize = 4;
/// Samples per choice before falling back to a full scan.
const ATTEMPTS: usize = 8;
/// Cost per in-flight request of a node with no latency information.
const PENALTY_NS: f64 = (i64::MAX >> 16) as f64;

#[derive(Debug)]
pub(crate) struct LeastLatency {
    cursor: Cell<usize>,
    rng: Rng,
}

/// Load-adjusted latency cost of `node` at `now` (lower is better).
pub(crate) fn cost(node: &Node, now: Instant) -> f64 {
    let inflight = f64::from(node.inflight());
    let weight = f64::from(node.weight());
    let estimate = node.latency_estimate_ns(now);
    if estimate > 0.0 {
        estimate * (inflight + 1.0) / weight
    } else {
        PENALTY_NS * inflight / weight
    }
}

impl LeastLatency {
    pub(crate) fn build<N: AsNode>(nodes: &[N]) -> LeastLatency {
        LeastLatency { cursor: Cell::new(0), rng: Rng::new(nodes.len() as u64 ^ 0x1a7e) }
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], tried: Tried, now: Instant) -> Option<usize> {
        let n = nodes.len();
        if n <= FULL_SCAN_MAX {
            return self.scan(nodes, tried, now);
        }
        let bound = n as u64;
        let a = (0..ATTEMPTS).map(|_| self.rng.below(bound) as usize).find(|&i| eligible(nodes, i, tried));
        let Some(a) = a else {
            return self.scan(nodes, tried, now);
        };
        let b = (0..ATTEMPTS)
            .map(|_| {
                // Uniform over the other n - 1 nodes.
                let j = self.rng.below(bound - 1) as usize;
                if j >= a {
                    j + 1
                } else {
                    j
                }
            })
            .find(|&i| eligible(nodes, i, tried));
        match b {
            Some(b) if cost(nodes[b].node(), now) < cost(nodes[a].node(), now) => Some(b),
            Some(_) => Some(a),
            None => self.scan(nodes, tried, now),
        }
    }

    /// Cheapest eligible node; ties go to the first from a rotating start.
    fn scan<N: AsNode>(&self, nodes: &[N], tried: Tried, now: Instant) -> Option<usize> {
        let n = nodes.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.get() % n;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(nodes, i, tried) {
                continue;
            }
            let c = cost(nodes[i].node(), now);
            match best {
                Some((_, bc)) if c >= bc => {}
                _ => {
                    best = Some((i, c));
                    if c <= 0.0 {
                        break; // idle and unsampled: cannot do better
                    }
                }
            }
        }
        let (i, _) = best?;
        self.cursor.set(i + 1);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Node, Strategy, Tried};
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    /// Open-loop simulation: one request per simulated millisecond, each
    /// node answers after its rtt. Returns picks per node.
    fn simulate(ns: &[Node], rtts: &[Duration], requests: usize) -> Vec<u32> {
        let b = Balancer::build(Strategy::LeastLatency, ns);
        let mut now = Instant::now();
        let mut open: Vec<(Instant, usize)> = Vec::new();
        let mut counts = vec![0u32; ns.len()];
        for _ in 0..requests {
            now += MS;
            open.retain(|&(done, i)| {
                if done <= now {
                    ns[i].finish(rtts[i], now);
                    false
                } else {
                    true
                }
            });
            let i = b.pick_at(ns, ip(0), Tried::default(), now).expect("up");
            ns[i].start();
            open.push((now + rtts[i], i));
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn slow_node_gets_little_traffic_full_scan() {
        let ns = nodes(&[1, 1, 1]);
        let rtts = [100 * MS, 10 * MS, 10 * MS];
        let counts = simulate(&ns, &rtts, 10_000);
        let total: u32 = counts.iter().sum();
        assert!(counts[0] * 5 < total, "{counts:?}");
    }

    #[test]
    fn slow_node_gets_little_traffic_p2c() {
        let ns = nodes(&[1; 8]);
        let mut rtts = [10 * MS; 8];
        rtts[0] = 100 * MS;
        let counts = simulate(&ns, &rtts, 10_000);
        let total: u32 = counts.iter().sum();
        assert!(counts[0] * 5 < total, "{counts:?}");
        // Well below the fair 1/8 share.
        assert!(counts[0] * 16 < total, "{counts:?}");
    }

    #[test]
    fn sequential_requests_avoid_slow_node() {
        // Closed loop, one request at a time (inflight is always 0 at pick).
        let ns = nodes(&[1, 1, 1]);
        let b = Balancer::build(Strategy::LeastLatency, &ns);
        let mut now = Instant::now();
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            let i = b.pick_at(&ns, ip(0), Tried::default(), now).expect("up");
            ns[i].start();
            let rtt = if i == 0 { 100 * MS } else { 10 * MS };
            now += rtt;
            ns[i].finish(rtt, now);
            counts[i] += 1;
        }
        assert!(counts[0] < 2_000, "{counts:?}");
        assert!(counts[1] > 3_000 && counts[2] > 3_000, "{counts:?}");
    }

    #[test]
    fn peak_ewma_math() {
        let n = Node::new("a", 1);
        let t0 = Instant::now();
        assert_eq!(n.latency_estimate_ns(t0), 0.0);
        assert!(!n.has_latency_sample());
        n.start();
        n.finish(10 * MS, t0);
        assert!((n.latency_estimate_ns(t0) - 10e6).abs() < 1.0);
        // Peak: a higher sample replaces the estimate immediately.
        n.finish(100 * MS, t0 + MS);
        assert!((n.latency_estimate_ns(t0 + MS) - 100e6).abs() < 1.0);
        // A lower sample one tau later: 100 * e^-1 + 10 * (1 - e^-1).
        let t1 = t0 + MS + Duration::from_secs(10);
        n.finish(10 * MS, t1);
        let e = (-1.0f64).exp();
        let want = 100e6 * e + 10e6 * (1.0 - e);
        assert!((n.latency_estimate_ns(t1) - want).abs() < 1e3, "{}", n.latency_estimate_ns(t1));
        // Idle decay on read, without mutation.
        let t2 = t1 + Duration::from_secs(10);
        assert!((n.latency_estimate_ns(t2) - want * e).abs() < 1e3);
        assert!((n.latency_estimate_ns(t1) - want).abs() < 1e3);
        assert_eq!(n.inflight(), 0);
    }

    #[test]
    fn new_node_gets_tried() {
        let ns = nodes(&[1, 1, 1, 1, 1, 1]);
        let b = Balancer::build(Strategy::LeastLatency, &ns);
        let now = Instant::now();
        for n in &ns[..5] {
            n.finish(MS, now);
        }
        // Node 5 has no samples: cost 0 beats everyone in a full scan...
        assert_eq!(b.pick_at(&ns[2..], ip(0), Tried::default(), now), Some(3));
        // ...and in P2C it wins whenever sampled.
        let mut hits = 0;
        for _ in 0..1000 {
            if b.pick_at(&ns, ip(0), Tried::default(), now) == Some(5) {
                hits += 1;
            }
        }
        assert!(hits > 200, "{hits}");
        // With a probe in flight and no sample it is avoided.
        ns[5].start();
        for _ in 0..200 {
            assert_ne!(b.pick_at(&ns, ip(0), Tried::default(), now), Some(5));
        }
    }

    #[test]
    fn slow_node_recovers_after_idle_decay() {
        let ns = nodes(&[1, 1]);
        let b = Balancer::build(Strategy::LeastLatency, &ns);
        let t0 = Instant::now();
        ns[0].finish(100 * MS, t0);
        ns[1].finish(10 * MS, t0);
        assert_eq!(b.pick_at(&ns, ip(0), Tried::default(), t0), Some(1));
        // Node 1 keeps answering in 10 ms, node 0 is never sampled again.
        let t1 = t0 + Duration::from_secs(60);
        ns[1].finish(10 * MS, t1);
        assert_eq!(b.pick_at(&ns, ip(0), Tried::default(), t1), Some(0));
    }

    #[test]
    fn weight_and_inflight_scale_cost() {
        let ns = nodes(&[4, 1]);
        let b = Balancer::build(Strategy::LeastLatency, &ns);
        let now = Instant::now();
        ns[0].finish(10 * MS, now);
        ns[1].finish(10 * MS, now);
        for _ in 0..3 {
            ns[0].start();
        }
        // 10 * 4 / 4 = 10 vs 10 * 1 / 1 = 10: tie; one more in flight on 1 tips it.
        ns[1].start();
        assert_eq!(b.pick_at(&ns, ip(0), Tried::default(), now), Some(0));
    }
}
