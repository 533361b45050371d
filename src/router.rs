//! Host and path lookup, built per snapshot off the request path.
//!
//! Hosts: exact names in a hash map, `*.suffix` wildcards in a second map
//! probed once per label (longest suffix first, so the most specific
//! wildcard wins), then the catch-all `*`. Matching is case-insensitive and
//! ignores the port (bracketed IPv6 included) and a trailing dot; the host is
//! normalised into a stack buffer, so lookup allocates nothing.
//! Paths: the route's rules sorted longest prefix first, matched on a segment
//! boundary of the raw path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::route::RouteRt;

/// Longest host name looked up; longer ones match only the catch-all.
const MAX_HOST: usize = 255;

/// A multiply-rotate hash over 8-byte words (FxHash's scheme). The tables
/// are built from the operator's config and only looked up with request
/// hosts, never grown by them, so a keyed (SipHash) hasher buys nothing
/// against collision flooding here; it cost ~3 % of the instructions per
/// request with 10,000 routes.
#[derive(Default, Clone, Copy)]
pub struct HostHasher(u64);

impl Hasher for HostHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w) ^ rest.len() as u64).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        // Multiplying carries bits only upward and the table indexes by the
        // low bits: fold the high half of a widening multiply back down
        // (without it, 10,000 similar hosts landed in ~1,000 home buckets).
        let p = u128::from(self.0) * 0x517c_c1b7_2722_0a95u128;
        (p as u64) ^ ((p >> 64) as u64)
    }
}

type HostMap<T> = HashMap<HostKey, T, BuildHasherDefault<HostHasher>>;

/// Longest name kept inside the table's slot.
const INLINE_HOST: usize = 30;

/// A host name as a table key: up to 30 bytes inside the table's own slot
/// (most names: comparing one reads no other memory, which with 10,000
/// routes saves a cache miss per lookup), longer ones shared between a
/// table and its patched copies.
#[derive(Clone)]
enum HostKey {
    Inline { len: u8, bytes: [u8; INLINE_HOST] },
    Shared(Rc<[u8]>),
}

impl HostKey {
    fn new(name: &[u8]) -> HostKey {
        if name.len() <= INLINE_HOST {
            let mut bytes = [0u8; INLINE_HOST];
            bytes[..name.len()].copy_from_slice(name);
            HostKey::Inline { len: name.len() as u8, bytes }
        } else {
            HostKey::Shared(name.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            HostKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            HostKey::Shared(name) => name,
        }
    }
}

impl std::borrow::Borrow<[u8]> for HostKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::hash::Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the `[u8]` it borrows as, so lookups by `&[u8]` find it.
        self.as_bytes().hash(state)
    }
}

impl PartialEq for HostKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HostKey {}

/// The routing table of one snapshot: host → route (a worker's
/// `Rc<RouteRt>`; the control side's explain uses route indexes, so both
/// match hosts by this one rule).
#[derive(Clone)]
pub struct Router<T = Rc<RouteRt>> {
    exact: HostMap<T>,
    wildcard: HostMap<T>,
    any: Option<T>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { exact: HostMap::default(), wildcard: HostMap::default(), any: None }
    }
}

impl Router {
    /// Builds the table from routes in config order.
    pub fn new(routes: &[Rc<RouteRt>]) -> Router {
        let mut r = Router::default();
        for route in routes {
            r.insert(route);
        }
        r
    }

    /// Adds (or replaces) the route for its vHost.
    pub fn insert(&mut self, route: &Rc<RouteRt>) {
        self.set(&route.cfg.vhost, route.clone());
    }

    /// Removes the route for `route`'s vHost.
    pub fn remove(&mut self, route: &RouteRt) {
        self.unset(&route.cfg.vhost);
    }
}

impl<T> Router<T> {
    /// Maps `vhost` to `value`.
    pub fn set(&mut self, vhost: &control::model::VHost, value: T) {
        match vhost {
            control::model::VHost::Any => self.any = Some(value),
            control::model::VHost::Exact(h) => {
                self.exact.insert(HostKey::new(h.as_bytes()), value);
            }
            control::model::VHost::Wildcard(s) => {
                self.wildcard.insert(HostKey::new(s.as_bytes()), value);
            }
        }
    }

    /// Unmaps `vhost`.
    pub fn unset(&mut self, vhost: &control::model::VHost) {
        match vhost {
            control::model::VHost::Any => self.any = None,
            control::model::VHost::Exact(h) => {
                self.exact.remove(h.as_bytes());
            }
            control::model::VHost::Wildcard(s) => {
                self.wildcard.remove(s.as_bytes());
            }
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The route for a Host value (`None` host: only the catch-all).
    pub fn lookup(&self, host: Option<&[u8]>) -> Option<&T> {
        let mut buf = [0u8; MAX_HOST];
        if let Some(name) = host.and_then(|h| normalise_host(h, &mut buf)) {
            if let Some(r) = self.exact.get(name) {
                return Some(r);
            }
            if !self.wildcard.is_empty() {
                for (i, &b) in name.iter().enumerate() {
                    if b == b'.' && i > 0 {
                        if let Some(r) = self.wildcard.get(&name[i + 1..]) {
                            return Some(r);
                        }
                    }
                }
            }
        }
        self.any.as_ref()
    }
}

/// Lowercases `host` without its port and trailing dot into `buf`.
pub fn normalise_host<'b>(host: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b [u8]> {
    if host.first() == Some(&b'[') && !host.contains(&b']') {
        return None;
    }
    let name = crate::http::host_part(host);
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..name.len()];
    for (o, &b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

/// Whether `path` (raw, query included) falls under `prefix` on a segment
/// boundary: `/api` matches `/api`, `/api/x`, `/api?q`, not `/apix`.
pub fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    if prefix == b"/" {
        return true;
    }
    path.starts_with(prefix) && matches!(path.get(prefix.len()), None | Some(b'/') | Some(b'?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_hosts_spread_over_the_low_bits() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<HostHasher>::default();
        for fmt in [|i: u32| format!("h{i}.bench.local"), |i: u32| format!("svc-{i:04}.example.com")] {
            let mut seen = std::collections::HashSet::new();
            for i in 0..10_000 {
                let key: Box<[u8]> = fmt(i).into_bytes().into();
                seen.insert(b.hash_one(&key) & 0x3fff);
            }
            // Uniform hashing gives ~7,870 distinct values of 16,384.
            assert!(seen.len() > 6_500, "{} home buckets", seen.len());
        }
    }

    #[test]
    fn short_and_long_names_are_found_alike() {
        let long = "a".repeat(INLINE_HOST) + ".example.com";
        let mut r: Router<u32> = Router::default();
        r.set(&control::model::VHost::Exact("short.example.com".into()), 1);
        r.set(&control::model::VHost::Exact(long.clone()), 2);
        r.set(&control::model::VHost::Wildcard(long.clone()), 3);
        assert_eq!(r.lookup(Some(b"SHORT.example.com:80")), Some(&1));
        assert_eq!(r.lookup(Some(long.as_bytes())), Some(&2));
        assert_eq!(r.lookup(Some(format!("x.{long}").as_bytes())), Some(&3));
        assert_eq!(r.lookup(Some(b"short.example.co")), None);
        r.unset(&control::model::VHost::Exact(long.clone()));
        assert_eq!(r.lookup(Some(long.as_bytes())), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn host_normalisation() {
        let mut b = [0u8; MAX_HOST];
        assert_eq!(normalise_host(b"API.Example.com.:8080", &mut b), Some(&b"api.example.com"[..]));
        let mut b = [0u8; MAX_HOST];
        assert_eq!(normalise_host(b"[::1]:8080", &mut b), Some(&b"[::1]"[..]));
        let mut b = [0u8; MAX_HOST];
        assert_eq!(normalise_host(b"", &mut b), None);
    }

    #[test]
    fn segment_boundaries() {
        assert!(prefix_matches(b"/api", b"/api"));
        assert!(prefix_matches(b"/api", b"/api/x"));
        assert!(prefix_matches(b"/api", b"/api?q=1"));
        assert!(!prefix_matches(b"/api", b"/apix"));
        assert!(prefix_matches(b"/", b"/anything"));
    }
}
