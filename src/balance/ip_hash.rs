//! Consistent hashing on the client address.
//!
//! The ring holds `160 * weight` virtual points per node, each the hash of
//! (node id, replica number), sorted by point. A client's address is hashed
//! and mapped to the first point at or after it (wrapping); the walk goes on
//! to the next points until an eligible node is found. Because the points
//! depend only on node ids, removing a node only remaps the clients that were
//! on it, and a down node's clients spread over the others while everyone
//! else stays put.

use std::net::IpAddr;

use super::{eligible, fnv1a, mix64, AsNode, Tried, FNV_OFFSET};

/// Virtual points per unit of weight.
pub(crate) const POINTS_PER_WEIGHT: u64 = 160;

/// Cap on ring size; with huge weights the per-node point counts are scaled
/// down proportionally (every node keeps at least one point).
pub(crate) const MAX_RING_POINTS: u64 = 160 * 1024;

#[derive(Debug)]
pub(crate) struct HashRing {
    /// (point, node index), sorted.
    ring: Box<[(u64, u32)]>,
    /// Number of nodes at build time.
    nodes: usize,
}

/// Hash of virtual point `replica` of node `id`.
pub(crate) fn point_hash(id: &str, replica: u32) -> u64 {
    let h = fnv1a(FNV_OFFSET, id.as_bytes());
    let h = fnv1a(h, &[0xff]);
    mix64(fnv1a(h, &replica.to_le_bytes()))
}

/// Hash of a client address; IPv4-mapped IPv6 addresses hash like IPv4.
pub(crate) fn client_hash(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let h = match ip {
        IpAddr::V4(v4) => fnv1a(fnv1a(FNV_OFFSET, &[4]), &v4.octets()),
        IpAddr::V6(v6) => fnv1a(fnv1a(FNV_OFFSET, &[6]), &v6.octets()),
    };
    mix64(h)
}

impl HashRing {
    pub(crate) fn build<N: AsNode>(nodes: &[N]) -> HashRing {
        // Nodes beyond u32::MAX cannot be addressed by the ring.
        let count = nodes.len().min(u32::MAX as usize);
        let nodes = &nodes[..count];
        let total_weight: u64 = nodes.iter().map(|n| u64::from(n.node().weight())).sum();
        let scaled = total_weight.saturating_mul(POINTS_PER_WEIGHT) > MAX_RING_POINTS;
        let replicas = |w: u64| -> u64 {
            if scaled {
                (w * MAX_RING_POINTS / total_weight).max(1)
            } else {
                w * POINTS_PER_WEIGHT
            }
        };
        let size: u64 = nodes.iter().map(|n| replicas(u64::from(n.node().weight()))).sum();
        let mut ring = Vec::with_capacity(size as usize);
        for (i, node) in nodes.iter().enumerate() {
            let node = node.node();
            let r = replicas(u64::from(node.weight())).min(u64::from(u32::MAX)) as u32;
            for replica in 0..r {
                ring.push((point_hash(node.id(), replica), i as u32));
            }
        }
        ring.sort_unstable();
        HashRing { ring: ring.into_boxed_slice(), nodes: count }
    }

    pub(crate) fn pick<N: AsNode>(&self, nodes: &[N], client: IpAddr, tried: Tried) -> Option<usize> {
        let n = nodes.len().min(self.nodes);
        let len = self.ring.len();
        // O(n) precheck so an all-down pool never walks the whole ring.
        if len == 0 || !(0..n).any(|i| eligible(nodes, i, tried)) {
            return None;
        }
        let h = client_hash(client);
        let pos = self.ring.partition_point(|&(p, _)| p < h);
        for k in 0..len {
            let (_, i) = self.ring[(pos + k) % len];
            let i = i as usize;
            if i < n && eligible(nodes, i, tried) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, nodes};
    use super::super::{Balancer, Node, Strategy, Tried};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const CLIENTS: u32 = 10_000;

    /// Spread-out distinct client addresses.
    fn client(i: u32) -> IpAddr {
        ip(i.wrapping_mul(2_654_435_761) >> 8)
    }

    fn assign<'a>(ns: &'a [Node], b: &Balancer) -> Vec<&'a str> {
        (0..CLIENTS)
            .map(|c| {
                let i = b.pick(ns, client(c), Tried::default()).expect("up");
                ns[i].id()
            })
            .collect()
    }

    #[test]
    fn sticky_and_deterministic() {
        let ns = nodes(&[1; 10]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        let b2 = Balancer::build(Strategy::IpHash, &ns);
        for c in 0..1000 {
            let first = b.pick(&ns, client(c), Tried::default());
            for _ in 0..5 {
                assert_eq!(b.pick(&ns, client(c), Tried::default()), first);
            }
            assert_eq!(b2.pick(&ns, client(c), Tried::default()), first);
        }
        // Also sequential addresses all resolve and spread.
        let mut counts = [0u32; 10];
        for c in 0..CLIENTS {
            counts[b.pick(&ns, ip(c), Tried::default()).expect("up")] += 1;
        }
        for c in counts {
            assert!((500..=1_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn even_spread() {
        let ns = nodes(&[1; 10]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        let mut counts = [0u32; 10];
        for c in 0..CLIENTS {
            counts[b.pick(&ns, client(c), Tried::default()).expect("up")] += 1;
        }
        for c in counts {
            assert!((600..=1_400).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_one_of_ten_remaps_little() {
        let all = nodes(&[1; 10]);
        let before = assign(&all, &Balancer::build(Strategy::IpHash, &all));
        let removed = "backend-3";
        let rest: Vec<Node> = (0..10).filter(|&i| i != 3).map(|i| Node::new(&format!("backend-{i}"), 1)).collect();
        let after = assign(&rest, &Balancer::build(Strategy::IpHash, &rest));
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                moved += 1;
                assert_eq!(*b, removed, "a client not on the removed node moved");
            }
        }
        assert!(moved > 0);
        assert!(moved <= CLIENTS as usize * 15 / 100, "moved {moved}");
    }

    #[test]
    fn adding_a_node_remaps_little() {
        let ten = nodes(&[1; 10]);
        let eleven = nodes(&[1; 11]);
        let before = assign(&ten, &Balancer::build(Strategy::IpHash, &ten));
        let after = assign(&eleven, &Balancer::build(Strategy::IpHash, &eleven));
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                moved += 1;
                assert_eq!(*a, "backend-10", "moved somewhere other than the new node");
            }
        }
        assert!(moved <= CLIENTS as usize * 15 / 100, "moved {moved}");
    }

    #[test]
    fn down_node_fails_over_others_stay() {
        let ns = nodes(&[1; 10]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        let before: Vec<usize> = (0..CLIENTS).map(|c| b.pick(&ns, client(c), Tried::default()).expect("up")).collect();
        ns[3].set_up(false);
        let mut moved_to = [0u32; 10];
        for (c, &was) in before.iter().enumerate() {
            let now = b.pick(&ns, client(c as u32), Tried::default()).expect("up");
            if was == 3 {
                assert_ne!(now, 3);
                moved_to[now] += 1;
            } else {
                assert_eq!(now, was, "client of a healthy node moved");
            }
        }
        // The down node's clients spread over several survivors.
        assert!(moved_to.iter().filter(|&&c| c > 0).count() >= 5, "{moved_to:?}");
        // Back up: everyone returns.
        ns[3].set_up(true);
        for (c, &was) in before.iter().enumerate() {
            assert_eq!(b.pick(&ns, client(c as u32), Tried::default()), Some(was));
        }
    }

    #[test]
    fn retry_goes_elsewhere() {
        let ns = nodes(&[1; 5]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        for c in 0..500 {
            let first = b.pick(&ns, client(c), Tried::default()).expect("up");
            let mut tried = Tried::default();
            tried.insert(first);
            let second = b.pick(&ns, client(c), tried).expect("up");
            assert_ne!(first, second);
            // The retry target is sticky too.
            assert_eq!(b.pick(&ns, client(c), tried), Some(second));
        }
    }

    #[test]
    fn weight_doubles_share() {
        let ns = nodes(&[2, 1, 1, 1, 1]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        let mut counts = [0u32; 5];
        for c in 0..CLIENTS {
            counts[b.pick(&ns, client(c), Tried::default()).expect("up")] += 1;
        }
        let share = f64::from(counts[0]) / f64::from(CLIENTS);
        assert!((0.26..=0.40).contains(&share), "{counts:?}"); // ideal 1/3
    }

    #[test]
    fn huge_weights_are_capped() {
        let ns = nodes(&[u32::MAX, u32::MAX, 1]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        let mut seen = [false; 3];
        for c in 0..CLIENTS {
            seen[b.pick(&ns, client(c), Tried::default()).expect("up")] = true;
        }
        assert!(seen[0] && seen[1]);
        ns[0].set_up(false);
        ns[1].set_up(false);
        assert_eq!(b.pick(&ns, client(1), Tried::default()), Some(2));
    }

    #[test]
    fn ipv4_mapped_hashes_like_ipv4() {
        let ns = nodes(&[1; 7]);
        let b = Balancer::build(Strategy::IpHash, &ns);
        for c in 0..200u32 {
            let v4 = Ipv4Addr::from(0xc0a8_0000 + c);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(b.pick(&ns, IpAddr::V4(v4), Tried::default()), b.pick(&ns, mapped, Tried::default()));
            let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, c as u16));
            assert!(b.pick(&ns, v6, Tried::default()).is_some());
        }
    }
}
