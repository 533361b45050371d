//! Load balancing strategies for backend pools.
//!
//! # Build / pick split
//!
//! A [`Balancer`] is built once per pool whenever a new configuration snapshot
//! arrives ([`Balancer::build`]). Building may allocate: it sizes per-node
//! state tables, precomputes weight prefix sums and builds the consistent-hash
//! ring. [`Balancer::pick`] runs once per request (and once more per retry):
//! it performs a bounded amount of work, never allocates, never locks, and only
//! touches `Cell`s. It returns an index into the very same slice (same length,
//! same order) that was given to `build`; nodes that are down
//! ([`Node::is_up`] is false) or already in the request's [`Tried`] set are
//! skipped. If the slice passed to `pick` is longer than the one given to
//! `build`, strategies with built state (weighted round robin, random, IP hash)
//! only consider the first `build`-time nodes.
//!
//! # Per-worker state
//!
//! ringway is thread-per-core and shared-nothing: every worker owns its own
//! copy of each pool's [`Node`]s and [`Balancer`]. Consequently all state a
//! balancer reads is *this core's* view:
//!
//! * **Round robin**: the cursor is per core, so every core cycles evenly over
//!   the backends on its own; the global order seen by the backends is an
//!   interleaving of the per-core cycles (still even over time).
//! * **Weighted round robin** (nginx smooth WRR): the current weights live in
//!   the balancer and are per core, so each core produces the smooth sequence
//!   independently; proportions hold globally, exact interleaving only per core.
//! * **Least connections**: [`Node::inflight`] counts only the requests that
//!   *this core* has in flight to a backend; other cores' load is invisible.
//!   With many cores and balanced accept distribution this approximates the
//!   global count well.
//! * **Random** (power of two choices): each balancer has its own xorshift64*
//!   generator; load comparisons use this core's in-flight counts.
//! * **IP hash**: the ring is a pure function of the node ids and weights, so
//!   all cores map a client to the same backend; only health (`up`) may differ
//!   transiently between cores.
//! * **Least latency** (peak EWMA): latency estimates are learned from this
//!   core's own responses only; each core converges independently.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod ip_hash;
mod least_conn;
mod least_latency;
mod random;
mod round_robin;
mod weighted;

use self::ip_hash::HashRing;
use self::least_conn::LeastConn;
use self::least_latency::LeastLatency;
use self::random::PowerOfTwo;
use self::round_robin::RoundRobin;
use self::weighted::SmoothWeighted;

/// Which strategy a pool uses (the main crate maps its config enum onto this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    Random,
    IpHash,
    LeastLatency,
}

/// Time constant of the peak-EWMA latency decay.
pub const EWMA_TAU: Duration = Duration::from_secs(10);

/// Per-worker live state of one backend that balancers read.
///
/// Single-threaded: `Cell`s only, no atomics, no locks.
#[derive(Debug)]
pub struct Node {
    /// false = skip (health down, maintenance, or passive failure).
    up: Cell<bool>,
    inflight: Cell<u32>,
    /// Always >= 1.
    weight: u32,
    /// Peak-EWMA latency estimate in nanoseconds (valid once `stamp` is set).
    ewma_ns: Cell<f64>,
    /// Time of the last latency sample; `None` = no sample yet.
    stamp: Cell<Option<Instant>>,
    /// Stable backend id, used as the consistent-hash key.
    id: String,
}

impl Node {
    /// A new node, initially up, with `weight` clamped to at least 1.
    pub fn new(id: &str, weight: u32) -> Node {
        Node {
            id: id.to_owned(),
            weight: weight.max(1),
            up: Cell::new(true),
            inflight: Cell::new(0),
            ewma_ns: Cell::new(0.0),
            stamp: Cell::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    pub fn set_up(&self, up: bool) {
        self.up.set(up);
    }

    /// Requests this worker currently has in flight to this node.
    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    /// A request was sent to this node.
    pub fn start(&self) {
        self.inflight.set(self.inflight.get().saturating_add(1));
    }

    /// It finished (success or failure) after `rtt`; `now` is the current
    /// time. Decrements inflight (saturating) and updates the peak-EWMA:
    /// a sample above the current estimate replaces it (peak), otherwise the
    /// estimate decays towards the sample with `exp(-elapsed / EWMA_TAU)`.
    pub fn finish(&self, rtt: Duration, now: Instant) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        let rtt_ns = rtt.as_nanos() as f64;
        let ewma = match self.stamp.get() {
            None => rtt_ns,
            Some(last) => {
                let cur = self.ewma_ns.get();
                if rtt_ns > cur {
                    rtt_ns
                } else {
                    let decay = decay_factor(now.saturating_duration_since(last));
                    cur * decay + rtt_ns * (1.0 - decay)
                }
            }
        };
        self.ewma_ns.set(ewma);
        // Never move the stamp backwards (out-of-order `now`s).
        let stamp = match self.stamp.get() {
            Some(last) if last > now => last,
            _ => now,
        };
        self.stamp.set(Some(stamp));
    }

    /// Peak-EWMA estimate in nanoseconds as seen at `now`.
    ///
    /// Like Finagle's and tower's peak EWMA, the estimate also decays towards
    /// zero while no samples arrive (`ewma * exp(-idle / EWMA_TAU)`), so a
    /// backend that was slow once is eventually probed again. Reading does
    /// not mutate anything. A node without any sample yet reports 0.
    pub fn latency_estimate_ns(&self, now: Instant) -> f64 {
        match self.stamp.get() {
            None => 0.0,
            Some(last) => self.ewma_ns.get() * decay_factor(now.saturating_duration_since(last)),
        }
    }

    /// Whether any latency sample has been recorded.
    pub fn has_latency_sample(&self) -> bool {
        self.stamp.get().is_some()
    }
}

/// Anything that holds a [`Node`]: the balancer's view of a backend.
/// (`AsRef` would not reach through `Rc`, which is how workers hold backends.)
pub trait AsNode {
    /// The node.
    fn node(&self) -> &Node;

    /// Whether it takes requests beyond its health (an open circuit
    /// breaker says no).
    fn admits(&self) -> bool {
        true
    }
}

impl AsNode for Node {
    fn node(&self) -> &Node {
        self
    }
}

impl<T: AsNode> AsNode for std::rc::Rc<T> {
    fn node(&self) -> &Node {
        (**self).node()
    }

    fn admits(&self) -> bool {
        (**self).admits()
    }
}

impl<T: AsNode> AsNode for &T {
    fn node(&self) -> &Node {
        (**self).node()
    }

    fn admits(&self) -> bool {
        (**self).admits()
    }
}

fn decay_factor(elapsed: Duration) -> f64 {
    (-(elapsed.as_nanos() as f64) / (EWMA_TAU.as_nanos() as f64)).exp()
}

/// Backends already tried for this request (retries go elsewhere).
///
/// A `u64` bitset over node indexes. Indexes >= 64 are never marked:
/// `insert` ignores them and `contains` reports false, so in pools with more
/// than 64 backends a retry may land on such a backend again.
///
/// It also carries whether health is ignored for this request (panic mode:
/// too few backends of the pool are up, so all of them take traffic).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Tried {
    bits: u64,
    ignore_health: bool,
}

impl Tried {
    /// Capacity of the bitset; indexes at or above this are never marked.
    pub const CAPACITY: usize = 64;

    /// Nothing tried yet, and down backends may be picked too (panic mode).
    pub fn ignoring_health() -> Tried {
        Tried { bits: 0, ignore_health: true }
    }

    pub fn insert(&mut self, i: usize) {
        if i < Self::CAPACITY {
            self.bits |= 1u64 << i;
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        i < Self::CAPACITY && self.bits & (1u64 << i) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }
}

/// Whether `nodes[i]` may be picked: exists, up (unless health is ignored)
/// and not yet tried.
#[inline]
pub(crate) fn eligible<N: AsNode>(nodes: &[N], i: usize, tried: Tried) -> bool {
    match nodes.get(i) {
        Some(n) => (tried.ignore_health || n.node().is_up()) && !tried.contains(i) && n.admits(),
        None => false,
    }
}

/// `a` carries strictly less load (inflight / weight) than `b`.
/// Compared by cross multiplication, no floats.
#[inline]
pub(crate) fn less_loaded(a: &Node, b: &Node) -> bool {
    u64::from(a.inflight()) * u64::from(b.weight()) < u64::from(b.inflight()) * u64::from(a.weight())
}

/// Per-balancer xorshift64* generator (single-threaded, in a `Cell`).
#[derive(Debug)]
pub(crate) struct Rng(Cell<u64>);

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Rng {
    /// Seeded from a non-zero constant mixed with `salt` (e.g. node count)
    /// and a global counter, so balancers built together differ.
    pub(crate) fn new(salt: u64) -> Rng {
        let count = SEED_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut seed = mix64(0x9E37_79B9_7F4A_7C15 ^ salt.rotate_left(32) ^ count);
        if seed == 0 {
            seed = 0x2545_F491_4F6C_DD1D;
        }
        Rng(Cell::new(seed))
    }

    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (`bound > 0`), Lemire's multiply-shift.
    #[inline]
    pub(crate) fn below(&self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from state `h`.
#[inline]
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64 finalizer: a bijective avalanche mix.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64-bit hash of a byte string: FNV-1a then the splitmix64 finalizer
/// (the same construction the IP-hash ring uses; stable across runs).
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, bytes))
}

/// Load balancer for one pool; see the module docs.
#[derive(Debug)]
pub struct Balancer {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    RoundRobin(RoundRobin),
    Weighted(SmoothWeighted),
    LeastConn(LeastConn),
    Random(PowerOfTwo),
    IpHash(HashRing),
    LeastLatency(LeastLatency),
}

impl Balancer {
    /// Build the balancer for `nodes` (may allocate).
    pub fn build<N: AsNode>(strategy: Strategy, nodes: &[N]) -> Balancer {
        let inner = match strategy {
            Strategy::RoundRobin => Inner::RoundRobin(RoundRobin::build(nodes)),
            Strategy::WeightedRoundRobin => Inner::Weighted(SmoothWeighted::build(nodes)),
            Strategy::LeastConnections => Inner::LeastConn(LeastConn::build(nodes)),
            Strategy::Random => Inner::Random(PowerOfTwo::build(nodes)),
            Strategy::IpHash => Inner::IpHash(HashRing::build(nodes)),
            Strategy::LeastLatency => Inner::LeastLatency(LeastLatency::build(nodes)),
        };
        Balancer { inner }
    }

    /// Index into `nodes` (the same slice, same order, as given to `build`),
    /// or `None` when no node is up and untried. Bounded, allocation free.
    ///
    /// For [`Strategy::LeastLatency`] this reads `Instant::now()`; use
    /// [`Balancer::pick_at`] to supply a cached clock instead.
    pub fn pick<N: AsNode>(&self, nodes: &[N], client: IpAddr, tried: Tried) -> Option<usize> {
        self.dispatch(nodes, client, tried, None)
    }

    /// Like [`Balancer::pick`] with an explicit current time (only read by
    /// [`Strategy::LeastLatency`]), e.g. the event loop's cached clock.
    pub fn pick_at<N: AsNode>(&self, nodes: &[N], client: IpAddr, tried: Tried, now: Instant) -> Option<usize> {
        self.dispatch(nodes, client, tried, Some(now))
    }

    #[inline]
    fn dispatch<N: AsNode>(&self, nodes: &[N], client: IpAddr, tried: Tried, now: Option<Instant>) -> Option<usize> {
        match &self.inner {
            Inner::RoundRobin(b) => b.pick(nodes, tried),
            Inner::Weighted(b) => b.pick(nodes, tried),
            Inner::LeastConn(b) => b.pick(nodes, tried),
            Inner::Random(b) => b.pick(nodes, tried),
            Inner::IpHash(b) => b.pick(nodes, client, tried),
            Inner::LeastLatency(b) => b.pick(nodes, tried, now.unwrap_or_else(Instant::now)),
        }
    }

    pub fn strategy(&self) -> Strategy {
        match &self.inner {
            Inner::RoundRobin(_) => Strategy::RoundRobin,
            Inner::Weighted(_) => Strategy::WeightedRoundRobin,
            Inner::LeastConn(_) => Strategy::LeastConnections,
            Inner::Random(_) => Strategy::Random,
            Inner::IpHash(_) => Strategy::IpHash,
            Inner::LeastLatency(_) => Strategy::LeastLatency,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::Node;
    use std::net::{IpAddr, Ipv4Addr};

    pub(crate) fn nodes(weights: &[u32]) -> Vec<Node> {
        weights.iter().enumerate().map(|(i, &w)| Node::new(&format!("backend-{i}"), w)).collect()
    }

    pub(crate) fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{ip, nodes};
    use super::*;
    use std::rc::Rc;

    const ALL: [Strategy; 6] = [
        Strategy::RoundRobin,
        Strategy::WeightedRoundRobin,
        Strategy::LeastConnections,
        Strategy::Random,
        Strategy::IpHash,
        Strategy::LeastLatency,
    ];

    #[test]
    fn strategy_roundtrip() {
        let ns = nodes(&[1, 2]);
        for s in ALL {
            assert_eq!(Balancer::build(s, &ns).strategy(), s);
        }
    }

    #[test]
    fn node_basics() {
        let n = Node::new("a", 0);
        assert_eq!(n.weight(), 1);
        assert_eq!(n.id(), "a");
        assert!(n.is_up());
        n.set_up(false);
        assert!(!n.is_up());
        let now = Instant::now();
        n.finish(Duration::from_millis(1), now);
        assert_eq!(n.inflight(), 0, "finish saturates at zero");
        n.start();
        n.start();
        assert_eq!(n.inflight(), 2);
        n.finish(Duration::from_millis(1), now);
        assert_eq!(n.inflight(), 1);
        assert_eq!(Node::new("b", 7).weight(), 7);
    }

    #[test]
    fn tried_bitset() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        t.insert(0);
        t.insert(63);
        t.insert(64);
        t.insert(1000);
        assert!(t.contains(0));
        assert!(t.contains(63));
        assert!(!t.contains(1));
        assert!(!t.contains(64), "indexes >= 64 are never marked");
        assert!(!t.contains(1000));
    }

    #[test]
    fn hash_is_stable_and_mixed() {
        assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abd"));
        let diff = (hash_bytes(b"node-1") ^ hash_bytes(b"node-2")).count_ones();
        assert!((16..=48).contains(&diff), "poor avalanche: {diff}");
    }

    #[test]
    fn rng_below_in_range() {
        let r = Rng::new(3);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            let v = r.below(5) as usize;
            seen[v] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn empty_pool_returns_none() {
        let ns: Vec<Node> = Vec::new();
        for s in ALL {
            let b = Balancer::build(s, &ns);
            assert_eq!(b.pick(&ns, ip(1), Tried::default()), None, "{s:?}");
        }
    }

    #[test]
    fn all_down_returns_none() {
        let ns = nodes(&[1, 2, 3, 1]);
        for n in &ns {
            n.set_up(false);
        }
        for s in ALL {
            let b = Balancer::build(s, &ns);
            for i in 0..20 {
                assert_eq!(b.pick(&ns, ip(i), Tried::default()), None, "{s:?}");
            }
        }
    }

    #[test]
    fn all_tried_returns_none() {
        let ns = nodes(&[1, 2, 3, 1]);
        let mut tried = Tried::default();
        for i in 0..ns.len() {
            tried.insert(i);
        }
        for s in ALL {
            let b = Balancer::build(s, &ns);
            for i in 0..20 {
                assert_eq!(b.pick(&ns, ip(i), tried), None, "{s:?}");
            }
        }
    }

    #[test]
    fn mixed_down_and_tried_returns_none() {
        let ns = nodes(&[1, 1, 1]);
        ns[0].set_up(false);
        ns[2].set_up(false);
        let mut tried = Tried::default();
        tried.insert(1);
        for s in ALL {
            let b = Balancer::build(s, &ns);
            assert_eq!(b.pick(&ns, ip(9), tried), None, "{s:?}");
            assert_eq!(b.pick(&ns, ip(9), Tried::default()), Some(1), "{s:?}");
        }
    }

    #[test]
    fn retries_respect_tried() {
        let ns = nodes(&[1, 3, 1, 2, 1]);
        for s in ALL {
            let b = Balancer::build(s, &ns);
            for c in 0..500u32 {
                let mut tried = Tried::default();
                let mut seen = Vec::new();
                // Simulate a request retried until every node was tried.
                for _ in 0..ns.len() {
                    let i = b.pick(&ns, ip(c), tried).expect("an untried node is up");
                    assert!(!tried.contains(i), "{s:?} returned tried index {i}");
                    assert!(!seen.contains(&i));
                    seen.push(i);
                    tried.insert(i);
                }
                assert_eq!(b.pick(&ns, ip(c), tried), None, "{s:?}");
            }
        }
    }

    #[test]
    fn only_remaining_node_is_picked() {
        let ns = nodes(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        for (i, n) in ns.iter().enumerate() {
            n.set_up(i == 7);
        }
        for s in ALL {
            let b = Balancer::build(s, &ns);
            for c in 0..200 {
                assert_eq!(b.pick(&ns, ip(c), Tried::default()), Some(7), "{s:?}");
            }
        }
    }

    #[test]
    fn works_with_rc_nodes() {
        let ns: Vec<Rc<Node>> = nodes(&[1, 1, 2]).into_iter().map(Rc::new).collect();
        for s in ALL {
            let b = Balancer::build(s, &ns);
            let i = b.pick(&ns, ip(1), Tried::default());
            assert!(matches!(i, Some(0..=2)), "{s:?}");
        }
    }
}
