//! Random with the power of two choices.
//!
//! Two distinct eligible nodes are sampled proportionally to weight (prefix
//! sum table built once) from a per-balancer xorshift64* generator; the one
//! with the lower `inflight / weight` wins (the first sample on ties, which
//! keeps the distribution weight-proportional when load is equal). Sampling
//! is bounded; if it keeps hitting ineligible nodes a linear scan over the
//! eligible ones (from a random start) picks the least loaded.

use super::{eligible, less_loaded, AsNode, Rng, Tried};

/// Samples per choice before falling back to a linear scan.
const ATTEMPTS: usize = 8;

#[derive(Debug)]
pub(crate) struct PowerOfTwo {
    /// `prefix[i]` = sum of the weights of nodes `0..=i` at build time.
    prefix: Box<[u64]>,
    rng: Rng,
}

impl PowerOfTwo {
    pub(crate) fn build<N: AsNode>(nodes: &[N]) -> PowerOfTwo {
        let mut sum = 0u64;
        let prefix = nodes
            .iter()
            .map(|n| {
                sum += u64::from(n.node().weight());
                sum
            })
            .collect();
        PowerOfTwo { prefix, rng: Rng::new(nodes.len() as u64) }
    }

    fn total(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(0)
    }

    /// Start offset and weight of node `i` in the prefix table.
    fn span(&self, i: usize) -> (u64, u64) {
        let start = if i == 0 { 0 } else { self.prefix[i - 1] };
        (start, self.prefix[i] - start)
    }

    /// Index owning weight position `r` (`r < total`).
    fn locate(&self, r: u64) -> usize {
        self.prefix.partition_point(|&c| c <= r)
    }

    /// A weighted sample.
    fn sample(&self) -> usize {
        self.locate(self.rng.below(self.total()))
    }

    /// A weighted sample among all nodes except `a` (needs >= 2 nodes).
    fn sample_except(&self, a: usize) -> usize {
        let (start, w) = self.span(a);
        let mut r = self.rng.below(self.total() - w);
        if r >= start {
            r += w;
        }
        self.locate(r)
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], tried: Tried) -> Option<usize> {
        let n = nodes.len().min(self.prefix.len());
        if n == 0 {
            return None;
        }
        let a = (0..ATTEMPTS).map(|_| self.sample()).find(|&i| i < n && eligible(nodes, i, tried));
        let Some(a) = a else {
            return self.scan(nodes, n, tried);
        };
        if self.prefix.len() < 2 {
            return Some(a);
        }
        let b = (0..ATTEMPTS).map(|_| self.sample_except(a)).find(|&i| i < n && eligible(nodes, i, tried));
        match b {
            Some(b) if less_loaded(nodes[b].node(), nodes[a].node()) => Some(b),
            Some(_) => Some(a),
            None => self.scan(nodes, n, tried),
        }
    }

    /// Least loaded eligible node among the first `n`, from a random start.
    fn scan<N: AsNode>(&self, nodes: &[N], n: usize, tried: Tried) -> Option<usize> {
        let start = self.rng.below(n as u64) as usize;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(nodes, i, tried) {
                continue;
            }
            match best {
                Some(b) if !less_loaded(nodes[i].node(), nodes[b].node()) => {}
                _ => best = Some(i),
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Strategy, Tried};

    #[test]
    fn four_equal_nodes_even() {
        let ns = nodes(&[1, 1, 1, 1]);
        let b = Balancer::build(Strategy::Random, &ns);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[b.pick(&ns, ip(0), Tried::default()).expect("up")] += 1;
        }
        for c in counts {
            assert!((8_500..=11_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn four_equal_nodes_even_with_load_feedback() {
        let ns = nodes(&[1, 1, 1, 1]);
        let b = Balancer::build(Strategy::Random, &ns);
        let mut counts = [0u32; 4];
        let mut open: Vec<usize> = Vec::new();
        for k in 0..40_000usize {
            let i = b.pick(&ns, ip(0), Tried::default()).expect("up");
            ns[i].start();
            open.push(i);
            counts[i] += 1;
            if open.len() > 16 {
                // Complete some pseudo-random outstanding request.
                let j = open.swap_remove((k * 7) % open.len());
                ns[j].finish(std::time::Duration::from_millis(1), std::time::Instant::now());
            }
        }
        for c in counts {
            assert!((8_500..=11_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn loaded_node_gets_far_fewer() {
        let ns = nodes(&[1, 1, 1, 1]);
        for _ in 0..100 {
            ns[2].start();
        }
        let b = Balancer::build(Strategy::Random, &ns);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[b.pick(&ns, ip(0), Tried::default()).expect("up")] += 1;
        }
        assert!(counts[2] < 400, "{counts:?}");
        for i in [0, 1, 3] {
            assert!(counts[i] > 11_000, "{counts:?}");
        }
    }

    #[test]
    fn weight_proportional() {
        let ns = nodes(&[3, 1]);
        let b = Balancer::build(Strategy::Random, &ns);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[b.pick(&ns, ip(0), Tried::default()).expect("up")] += 1;
        }
        let share = f64::from(counts[0]) / 40_000.0;
        assert!((0.70..=0.80).contains(&share), "{counts:?}");
    }

    #[test]
    fn heavy_weight_still_samples_two() {
        // Distinct second choice even when one node owns almost all weight.
        let ns = nodes(&[1_000_000, 1]);
        ns[0].start();
        let b = Balancer::build(Strategy::Random, &ns);
        for _ in 0..100 {
            assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(1));
        }
    }

    #[test]
    fn falls_back_when_sampling_misses() {
        let ns = nodes(&[1000, 1000, 1000, 1]);
        for n in &ns[..3] {
            n.set_up(false);
        }
        let b = Balancer::build(Strategy::Random, &ns);
        for _ in 0..1000 {
            assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(3));
        }
    }
}
