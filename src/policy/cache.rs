//! A response cache per worker and route (or path rule): GET answers with
//! a length, stored as they stream to the client, served to later GETs
//! and HEADs of the same host and target while fresh.
//!
//! Never stored: a request with `Authorization` or `Cache-Control:
//! no-store`; a response other than 200, without `Content-Length`, over
//! `maxEntryBytes`, with `Set-Cookie`, `Vary`, or `Cache-Control` saying
//! `no-store`, `private` or `no-cache`. Freshness: `s-maxage`, else
//! `max-age`, else the route's `ttlMs`. A request's `Cache-Control:
//! no-cache` skips the lookup (its answer may still be stored). Answers
//! carry `X-Cache: HIT` (with `Age`) or `MISS`. Memory is bounded per
//! worker (`maxBytes`, oldest entries out first). Entries live while the
//! route's cache settings are unchanged.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use control::policy::Cache;

use crate::http::{slice, HeaderSpan, RequestView, ResponseHead};

/// A stored answer.
pub struct Entry {
    /// Status code.
    pub status: u16,
    /// Its header lines (`name: value\r\n`, framing and hop-by-hop fields
    /// left out).
    pub head: Vec<u8>,
    /// Its body.
    pub body: Vec<u8>,
    stored: Instant,
    ttl: Duration,
}

impl Entry {
    /// Seconds since it was stored.
    pub fn age(&self) -> u64 {
        self.stored.elapsed().as_secs()
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh entry.
    Hit(Rc<Entry>),
    /// None: store the answer under the key written to the caller's buffer.
    Miss,
    /// The request may not use the cache.
    Bypass,
}

/// One rule's cache on one worker.
pub struct CacheRt {
    cfg: Cache,
    entries: RefCell<HashMap<Vec<u8>, Rc<Entry>>>,
    order: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<u64>,
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t.eq_ignore_ascii_case(token)
            || (t.len() > token.len() && t[..token.len()].eq_ignore_ascii_case(token) && t[token.len()] == b'=')
    })
}

fn directive(value: &[u8], name: &[u8]) -> Option<u64> {
    value.split(|&b| b == b',').find_map(|t| {
        let t = t.trim_ascii();
        let (k, v) = t.split_at(t.iter().position(|&b| b == b'=')?);
        if !k.eq_ignore_ascii_case(name) {
            return None;
        }
        std::str::from_utf8(&v[1..]).ok()?.trim_matches('"').parse().ok()
    })
}

/// Response fields never stored (framing, hop-by-hop, per-exchange).
const NOT_STORED: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"content-length",
    b"trailer",
    b"upgrade",
    b"age",
    b"x-cache",
];

impl CacheRt {
    /// An empty cache with `cfg`.
    pub fn new(cfg: &Cache) -> CacheRt {
        CacheRt { cfg: cfg.clone(), entries: RefCell::default(), order: RefCell::default(), bytes: Cell::new(0) }
    }

    /// Looks `view` up; on a miss its key is left in `key`.
    pub fn lookup(&self, view: &RequestView<'_>, key: &mut Vec<u8>) -> Lookup {
        let method = view.method();
        if !(method == b"GET" || method == b"HEAD") || view.header(b"authorization").is_some() {
            return Lookup::Bypass;
        }
        let cc = view.header(b"cache-control").unwrap_or(b"");
        if has_token(cc, b"no-store") {
            return Lookup::Bypass;
        }
        key.clear();
        key.extend(view.authority().unwrap_or(b"").iter().map(u8::to_ascii_lowercase));
        key.push(b' ');
        key.extend_from_slice(view.target());
        if !has_token(cc, b"no-cache") {
            let found = self.entries.borrow().get(&key[..]).cloned();
            if let Some(e) = found {
                if e.stored.elapsed() < e.ttl {
                    return Lookup::Hit(e);
                }
            }
        }
        if method == b"HEAD" {
            // A HEAD answer has no body to store.
            key.clear();
            return Lookup::Bypass;
        }
        Lookup::Miss
    }

    /// Whether a response may be stored; its header lines and freshness.
    pub fn storable(&self, buf: &[u8], resp: &ResponseHead, spans: &[HeaderSpan]) -> Option<(Vec<u8>, Duration)> {
        let len = match resp.body {
            crate::http::BodyKind::Length(n) => n,
            _ => return None,
        };
        if resp.status != 200 || len > self.cfg.max_entry_bytes {
            return None;
        }
        let mut ttl = self.cfg.ttl;
        let mut head = Vec::with_capacity(256);
        for s in spans {
            let (n, v) = (slice(buf, s.name), slice(buf, s.value));
            if n.eq_ignore_ascii_case(b"set-cookie") || n.eq_ignore_ascii_case(b"vary") {
                return None;
            }
            if n.eq_ignore_ascii_case(b"cache-control") {
                if has_token(v, b"no-store") || has_token(v, b"private") || has_token(v, b"no-cache") {
                    return None;
                }
                match directive(v, b"s-maxage").or_else(|| directive(v, b"max-age")) {
                    Some(0) => return None,
                    Some(s) => ttl = Duration::from_secs(s),
                    None => {}
                }
            }
            if NOT_STORED.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                continue;
            }
            head.extend_from_slice(n);
            head.extend_from_slice(b": ");
            head.extend_from_slice(v);
            head.extend_from_slice(b"\r\n");
        }
        Some((head, ttl))
    }

    /// Stores an answer under `key` (oldest entries go to make room).
    pub fn store(&self, key: Vec<u8>, head: Vec<u8>, body: Vec<u8>, ttl: Duration) {
        let size = (key.len() + head.len() + body.len()) as u64;
        if size > self.cfg.max_entry_bytes.saturating_add(key.len() as u64 + 4096) {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        let mut order = self.order.borrow_mut();
        if let Some(old) = entries.remove(&key) {
            self.bytes.set(self.bytes.get().saturating_sub((key.len() + old.head.len() + old.body.len()) as u64));
            order.retain(|k| *k != key);
        }
        while self.bytes.get() + size > self.cfg.max_bytes {
            let Some(k) = order.pop_front() else { break };
            if let Some(e) = entries.remove(&k) {
                self.bytes.set(self.bytes.get().saturating_sub((k.len() + e.head.len() + e.body.len()) as u64));
            }
        }
        self.bytes.set(self.bytes.get() + size);
        order.push_back(key.clone());
        entries.insert(key, Rc::new(Entry { status: 200, head, body, stored: Instant::now(), ttl }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_tokens() {
        assert!(has_token(b"public, no-store", b"no-store"));
        assert!(has_token(b"private=\"x\"", b"private"));
        assert!(!has_token(b"no-storex", b"no-store"));
        assert_eq!(directive(b"public, max-age=60", b"max-age"), Some(60));
        assert_eq!(directive(b"s-maxage=\"5\", max-age=60", b"s-maxage"), Some(5));
        assert_eq!(directive(b"public", b"max-age"), None);
    }
}
