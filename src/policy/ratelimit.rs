//! Rate limits: a token bucket per key (client address or a header's
//! value), shared by every worker, so the limit holds for the whole
//! process however a client's connections spread over the cores. Keys are
//! hashed into 64 shards, each a small map behind its own mutex: a request
//! takes one uncontended lock for a few dozen nanoseconds. Each limit keeps
//! at most `MAX_KEYS` keys; past that the clock hand evicts keys not used
//! since it last passed (an approximation of least-recently-used), so a
//! flood of distinct addresses costs bounded memory.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use control::policy::RateLimit;

/// Keys per limit, at most.
pub const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 64;
const PER_SHARD: usize = MAX_KEYS / SHARDS;

/// Why a request was refused, for the 429's headers.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    /// The limit (requests per second).
    pub limit: u32,
    /// Seconds until a request would pass.
    pub retry_after: u32,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Used since the clock hand last passed.
    used: bool,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<u64, Bucket>,
    /// Keys in insertion order, for the clock hand.
    ring: Vec<u64>,
    hand: usize,
}

impl Shard {
    /// Makes room for one more key: the first key the hand finds unused
    /// since its last pass goes.
    fn evict_one(&mut self) {
        for _ in 0..2 * self.ring.len() {
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let k = self.ring[self.hand];
            match self.buckets.get_mut(&k) {
                Some(b) if b.used => {
                    b.used = false;
                    self.hand += 1;
                }
                _ => {
                    self.buckets.remove(&k);
                    self.ring.swap_remove(self.hand);
                    return;
                }
            }
        }
    }
}

/// One configured limit's buckets.
pub struct Limiter {
    cfg: RateLimit,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl Limiter {
    fn new(cfg: &RateLimit) -> Limiter {
        Limiter {
            cfg: cfg.clone(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Takes a token for `key`, or says when one will be there.
    pub fn check(&self, key: &[u8]) -> Result<(), Refusal> {
        let h = self.hasher.hash_one(key);
        let rate = f64::from(self.cfg.per_second);
        let burst = f64::from(self.cfg.burst);
        let now = Instant::now();
        let mut shard = match self.shards[(h as usize) % SHARDS].lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !shard.buckets.contains_key(&h) {
            if shard.buckets.len() >= PER_SHARD {
                shard.evict_one();
            }
            shard.buckets.insert(h, Bucket { tokens: burst, last: now, used: true });
            shard.ring.push(h);
        }
        let Some(b) = shard.buckets.get_mut(&h) else { return Ok(()) };
        b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        b.used = true;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u32;
        Err(Refusal { limit: self.cfg.per_second, retry_after: wait })
    }

    /// Keys held now (for tests and stats).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.buckets.len()).unwrap_or(0)).sum()
    }
}

type Registry = Mutex<HashMap<(String, String), Weak<Limiter>>>;

/// The limiter for `route`/`prefix` with this config: the one every worker
/// already uses when the config is unchanged, else a new one (buckets
/// start full). Called when a snapshot is applied, never per request.
pub fn shared(route: &str, prefix: &str, cfg: &RateLimit) -> Arc<Limiter> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(Registry::default);
    let mut map = match registry.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    let key = (route.to_string(), prefix.to_string());
    if let Some(l) = map.get(&key).and_then(Weak::upgrade).filter(|l| l.cfg == *cfg) {
        return l;
    }
    // Only when one is made: limits no route uses any more go.
    map.retain(|_, w| w.strong_count() > 0);
    let l = Arc::new(Limiter::new(cfg));
    map.insert(key, Arc::downgrade(&l));
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::policy::RateKey;

    #[test]
    fn burst_then_refusals_and_bounded_keys() {
        let l = Limiter::new(&RateLimit { per_second: 1, burst: 3, key: RateKey::ClientIp });
        for _ in 0..3 {
            assert!(l.check(b"a").is_ok());
        }
        let r = l.check(b"a").expect_err("over the burst");
        assert_eq!((r.limit, r.retry_after), (1, 1));
        assert!(l.check(b"b").is_ok(), "another key has its own bucket");
        for i in 0..(MAX_KEYS as u32 + 5_000) {
            let _ = l.check(&i.to_le_bytes());
        }
        assert!(l.keys() <= MAX_KEYS, "{} keys", l.keys());
    }
}
