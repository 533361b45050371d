//! Plain round robin: a per-worker cursor cycling over eligible nodes.

use std::cell::Cell;

use super::{eligible, AsNode, Tried};

/// Weight is ignored; down and tried nodes are skipped.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    /// Index to try first on the next pick.
    cursor: Cell<usize>,
}

impl RoundRobin {
    pub(crate) fn build<N: AsNode>(_nodes: &[N]) -> RoundRobin {
        RoundRobin::default()
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], tried: Tried) -> Option<usize> {
        let n = nodes.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.get() % n;
        for k in 0..n {
            let i = (start + k) % n;
            if eligible(nodes, i, tried) {
                self.cursor.set(i + 1);
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Strategy, Tried};

    #[test]
    fn cycles_evenly() {
        let ns = nodes(&[1, 5, 1]);
        let b = Balancer::build(Strategy::RoundRobin, &ns);
        let mut counts = [0u32; 3];
        for k in 0..3000 {
            let i = b.pick(&ns, ip(0), Tried::default()).expect("up");
            assert_eq!(i, k % 3, "strict cycle order");
            counts[i] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
    }

    #[test]
    fn skips_down_node() {
        let ns = nodes(&[1, 1, 1]);
        ns[1].set_up(false);
        let b = Balancer::build(Strategy::RoundRobin, &ns);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[b.pick(&ns, ip(0), Tried::default()).expect("up")] += 1;
        }
        assert_eq!(counts, [1500, 0, 1500]);
        // Comes back into rotation once up again.
        ns[1].set_up(true);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[b.pick(&ns, ip(0), Tried::default()).expect("up")] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
    }

    #[test]
    fn retry_moves_on() {
        let ns = nodes(&[1, 1, 1]);
        let b = Balancer::build(Strategy::RoundRobin, &ns);
        let mut tried = Tried::default();
        let first = b.pick(&ns, ip(0), tried).expect("up");
        tried.insert(first);
        let second = b.pick(&ns, ip(0), tried).expect("up");
        assert_ne!(first, second);
    }
}
