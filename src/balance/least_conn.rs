//! Least connections: minimum `inflight / weight` (cross-multiplied, no
//! floats). Ties are broken by a rotating start index so equally loaded
//! nodes share the load. In-flight counts are this worker's only.

use std::cell::Cell;

use super::{eligible, less_loaded, AsNode, Tried};

#[derive(Debug, Default)]
pub(crate) struct LeastConn {
    cursor: Cell<usize>,
}

impl LeastConn {
    pub(crate) fn build<N: AsNode>(_nodes: &[N]) -> LeastConn {
        LeastConn::default()
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], tried: Tried) -> Option<usize> {
        let n = nodes.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.get() % n;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(nodes, i, tried) {
                continue;
            }
            let node = nodes[i].node();
            match best {
                Some(b) if !less_loaded(node, nodes[b].node()) => {}
                _ => {
                    best = Some(i);
                    if node.inflight() == 0 {
                        break; // cannot do better than idle
                    }
                }
            }
        }
        let i = best?;
        self.cursor.set(i + 1);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Strategy, Tried};

    #[test]
    fn prefers_idle_backend() {
        let ns = nodes(&[1, 1, 1]);
        ns[0].start();
        ns[1].start();
        ns[1].start();
        let b = Balancer::build(Strategy::LeastConnections, &ns);
        for _ in 0..10 {
            assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(2));
        }
        ns[2].start();
        ns[2].start();
        // 1, 2, 2 in flight: node 0 is least loaded now.
        assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(0));
    }

    #[test]
    fn weight_scales_load() {
        let ns = nodes(&[4, 1]);
        for _ in 0..3 {
            ns[0].start();
        }
        ns[1].start();
        let b = Balancer::build(Strategy::LeastConnections, &ns);
        // 3/4 < 1/1
        assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(0));
        ns[0].start();
        // 4/4 == 1/1: tie, both must get picks thanks to the rotating start.
        let mut seen = [false; 2];
        for _ in 0..4 {
            seen[b.pick(&ns, ip(0), Tried::default()).expect("up")] = true;
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn ties_rotate_and_track_load() {
        let ns = nodes(&[1, 1, 1]);
        let b = Balancer::build(Strategy::LeastConnections, &ns);
        let order: Vec<usize> = (0..6).map(|_| b.pick(&ns, ip(0), Tried::default()).expect("up")).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        // With start() the counts stay balanced.
        let mut counts = [0u32; 3];
        for _ in 0..300 {
            let i = b.pick(&ns, ip(0), Tried::default()).expect("up");
            ns[i].start();
            counts[i] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn skips_down_even_if_idle() {
        let ns = nodes(&[1, 1]);
        ns[1].set_up(false);
        ns[0].start();
        let b = Balancer::build(Strategy::LeastConnections, &ns);
        assert_eq!(b.pick(&ns, ip(0), Tried::default()), Some(0));
    }
}
