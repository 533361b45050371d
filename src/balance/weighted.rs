//! nginx-style smooth weighted round robin.
//!
//! Each pick: every eligible node's `current += weight`; the node with the
//! largest `current` wins (first index on ties) and its `current` is reduced
//! by the total weight of the eligible nodes. Weights 5:1:1 yield
//! `a a b a c a a`. The `current` values live in the balancer (per worker),
//! sized when it is built.

use std::cell::Cell;

use super::{eligible, AsNode, Tried};

#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    /// Smooth-WRR current weight per node. Bounded by +-(sum of weights),
    /// which fits an `i64` for any realistic pool.
    current: Box<[Cell<i64>]>,
}

impl SmoothWeighted {
    pub(crate) fn build<N: AsNode>(nodes: &[N]) -> SmoothWeighted {
        SmoothWeighted { current: nodes.iter().map(|_| Cell::new(0)).collect() }
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], tried: Tried) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (node, cur)) in nodes.iter().zip(self.current.iter()).enumerate() {
            if !eligible(nodes, i, tried) {
                continue;
            }
            let w = i64::from(node.node().weight());
            let c = cur.get().saturating_add(w);
            cur.set(c);
            total = total.saturating_add(w);
            match best {
                Some((_, bc)) if bc >= c => {}
                _ => best = Some((i, c)),
            }
        }
        let (i, c) = best?;
        self.current[i].set(c.saturating_sub(total));
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Strategy, Tried};

    fn letters(b: &Balancer, ns: &[crate::balance::Node], picks: usize) -> String {
        (0..picks)
            .map(|_| {
                let i = b.pick(ns, ip(0), Tried::default()).expect("up");
                (b'a' + i as u8) as char
            })
            .collect()
    }

    #[test]
    fn smooth_5_1_1() {
        let ns = nodes(&[5, 1, 1]);
        let b = Balancer::build(Strategy::WeightedRoundRobin, &ns);
        assert_eq!(letters(&b, &ns, 7), "aabacaa");
        let b = Balancer::build(Strategy::WeightedRoundRobin, &ns);
        let seq = letters(&b, &ns, 700);
        assert_eq!(seq, "aabacaa".repeat(100));
        assert_eq!(seq.matches('a').count(), 500);
        assert_eq!(seq.matches('b').count(), 100);
        assert_eq!(seq.matches('c').count(), 100);
    }

    #[test]
    fn proportions_and_smoothness() {
        let ns = nodes(&[3, 2, 1]);
        let b = Balancer::build(Strategy::WeightedRoundRobin, &ns);
        let seq = letters(&b, &ns, 600);
        assert_eq!(seq.matches('a').count(), 300);
        assert_eq!(seq.matches('b').count(), 200);
        assert_eq!(seq.matches('c').count(), 100);
        assert!(!seq.contains("aaa"), "not smooth: {}", &seq[..12]);
    }

    #[test]
    fn skips_down_and_tried() {
        let ns = nodes(&[5, 1, 1]);
        ns[0].set_up(false);
        let b = Balancer::build(Strategy::WeightedRoundRobin, &ns);
        assert_eq!(letters(&b, &ns, 6), "bcbcbc");
        ns[0].set_up(true);
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..50 {
            assert_ne!(b.pick(&ns, ip(0), tried), Some(0));
        }
    }
}
