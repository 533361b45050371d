//! A response cache per worker and route (or path rule): GET answers with
//! a length, stored as they stream to the client, served to later GETs
//! and HEADs of the same host and target while fresh.
//!
//! - Key: the host and target, plus the values of the request headers the
//!   response's `Vary` names (up to `MAX_VARY` names and `MAX_VARIANTS`
//!   variants per target; `Vary: *` is never stored).
//! - Never stored: a request with `Cache-Control: no-store`; a request
//!   with `Authorization` unless the response says `public` or
//!   `s-maxage`; a response other than 200, without `Content-Length`, over
//!   `maxEntryBytes`, with `Set-Cookie`, or with `Cache-Control` saying
//!   `no-store`, `private` or `no-cache`.
//! - Freshness: `s-maxage`, else `max-age`, else the route's `ttlMs`. A
//!   request's `Cache-Control: no-cache` skips the lookup (its answer may
//!   still be stored).
//! - Coalescing: while one GET fetches a missing target, other GETs for it
//!   on the same worker wait for that answer (up to `COALESCE_WAIT`), then
//!   look again; a fetch that ends without storing wakes them to fetch for
//!   themselves. At most one fetch per target per worker is in flight.
//! - Answers carry `X-Cache: HIT` (with `Age`) or `MISS`. Memory is bounded
//!   per worker (`maxBytes`, oldest entries out first). Entries live while
//!   the route's cache settings are unchanged, or until purged.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use control::policy::Cache;

use crate::http::{slice, HeaderSpan, RequestView, ResponseHead};

/// Most header names a stored answer may vary on.
const MAX_VARY: usize = 8;
/// Most variants kept per target (the oldest goes first).
const MAX_VARIANTS: usize = 8;
/// How long a request waits for another's fetch of the same target
/// (nginx's `proxy_cache_lock_timeout` default).
const COALESCE_WAIT: Duration = Duration::from_secs(5);

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

    fn size(&self, key: usize) -> u64 {
        (key + self.head.len() + self.body.len()) as u64
    }

    fn fresh(&self) -> bool {
        self.stored.elapsed() < self.ttl
    }
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh entry.
    Hit(Rc<Entry>),
    /// None: store the answer (the key and request headers are in `Miss`).
    Miss,
    /// The request may not use the cache.
    Bypass,
}

/// One request's part in the cache, kept with the connection's buffers.
#[derive(Default)]
pub struct Miss {
    /// The target's key (host and target), empty when nothing is stored.
    pub key: Vec<u8>,
    /// The request's header lines (`name:value\n`, names lowercase), for
    /// the response's `Vary`.
    pub request: Vec<u8>,
    /// The answer's body as it streams, while it is being stored.
    pub body: Vec<u8>,
    /// Set while this request fetches a target others wait for.
    pub fill: Option<Fill>,
}

impl Miss {
    /// Ready for the next request (a stored body's buffer is not kept).
    pub fn reset(&mut self) {
        self.key.clear();
        self.request.clear();
        if self.body.capacity() > 0 {
            self.body = Vec::new();
        }
        self.fill = None;
    }

    /// The value of request header `name` (lowercase), as saved.
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.request.split(|&b| b == b'\n').find_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            (&line[..colon] == name).then(|| &line[colon + 1..])
        })
    }
}

/// The stored variants of one target.
struct Slot {
    /// The header names its answers vary on (lowercase).
    vary: Box<[Box<[u8]>]>,
    /// Each variant: the varied headers' values, and the answer.
    variants: Vec<(Box<[u8]>, Rc<Entry>)>,
}

/// Requests waiting for one fetch.
#[derive(Default)]
struct Waiters {
    done: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

/// A target's key and a variant's varied values.
type VariantKey = (Box<[u8]>, Box<[u8]>);

type PendingMap = Rc<RefCell<HashMap<Box<[u8]>, Rc<Waiters>>>>;

/// Held by the request fetching a target others wait for; dropping it
/// (stored or not) wakes them.
pub struct Fill {
    pending: PendingMap,
    key: Box<[u8]>,
    waiters: Rc<Waiters>,
}

impl Drop for Fill {
    fn drop(&mut self) {
        let mut map = self.pending.borrow_mut();
        if map.get(&self.key).is_some_and(|w| Rc::ptr_eq(w, &self.waiters)) {
            map.remove(&self.key);
        }
        drop(map);
        self.waiters.done.set(true);
        for w in self.waiters.wakers.take() {
            w.wake();
        }
    }
}

/// Waits until a fetch ends.
struct Wait(Rc<Waiters>);

impl Future for Wait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One rule's cache on one worker.
pub struct CacheRt {
    cfg: Cache,
    slots: RefCell<HashMap<Box<[u8]>, Slot>>,
    /// Stored variants, oldest first (target key, varied values); may hold
    /// variants already gone.
    order: RefCell<VecDeque<VariantKey>>,
    bytes: Cell<u64>,
    entries: Cell<u64>,
    pending: PendingMap,
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

/// The varied headers' values, each followed by `\n` (`\r` for an absent
/// header, so that absent and empty differ).
fn vary_values<'a>(names: &[Box<[u8]>], get: impl Fn(&[u8]) -> Option<&'a [u8]>, out: &mut Vec<u8>) {
    for n in names {
        match get(n) {
            Some(v) => {
                out.extend_from_slice(v.trim_ascii());
                out.push(b'\n');
            }
            None => out.push(b'\r'),
        }
    }
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

/// What `storable` found in a response: its header lines to store, its
/// freshness and the names it varies on.
pub struct Storable {
    head: Vec<u8>,
    ttl: Duration,
    vary: Vec<Box<[u8]>>,
}

impl CacheRt {
    /// An empty cache with `cfg`.
    pub fn new(cfg: &Cache) -> CacheRt {
        CacheRt {
            cfg: cfg.clone(),
            slots: RefCell::default(),
            order: RefCell::default(),
            bytes: Cell::new(0),
            entries: Cell::new(0),
            pending: PendingMap::default(),
        }
    }

    /// Bytes and entries held now.
    pub fn level(&self) -> (u64, u64) {
        (self.bytes.get(), self.entries.get())
    }

    /// A fresh entry for `view` under the target key in `key`.
    fn find(&self, view: &RequestView<'_>, key: &[u8], values: &mut Vec<u8>) -> Option<Rc<Entry>> {
        let slots = self.slots.borrow();
        let slot = slots.get(key)?;
        values.clear();
        vary_values(&slot.vary, |n| view.header(n), values);
        slot.variants.iter().find(|(v, e)| **v == values[..] && e.fresh()).map(|(_, e)| e.clone())
    }

    /// Looks `view` up. On a miss its key and headers are left in `miss`,
    /// and, when no other request on this worker is fetching the target,
    /// `miss.fill` marks this one as its fetch. A GET whose target is being
    /// fetched waits for that fetch first.
    pub async fn lookup(&self, view: &RequestView<'_>, miss: &mut Miss) -> Lookup {
        let method = view.method();
        if !(method == b"GET" || method == b"HEAD") {
            return Lookup::Bypass;
        }
        let cc = view.header(b"cache-control").unwrap_or(b"");
        if has_token(cc, b"no-store") {
            return Lookup::Bypass;
        }
        miss.key.clear();
        miss.key.extend(view.authority().unwrap_or(b"").iter().map(u8::to_ascii_lowercase));
        miss.key.push(b' ');
        miss.key.extend_from_slice(view.target());
        let revalidate = has_token(cc, b"no-cache");
        if !revalidate {
            if let Some(e) = self.find(view, &miss.key, &mut miss.request) {
                return Lookup::Hit(e);
            }
        }
        if method == b"HEAD" {
            // A HEAD answer has no body to store.
            miss.key.clear();
            return Lookup::Bypass;
        }
        if !revalidate {
            let fetching = self.pending.borrow().get(&miss.key[..]).cloned();
            if let Some(w) = fetching {
                let _ = monoio::time::timeout(COALESCE_WAIT, Wait(w)).await;
                if let Some(e) = self.find(view, &miss.key, &mut miss.request) {
                    return Lookup::Hit(e);
                }
            }
            if !self.pending.borrow().contains_key(&miss.key[..]) {
                let waiters = Rc::new(Waiters::default());
                let key: Box<[u8]> = miss.key.as_slice().into();
                self.pending.borrow_mut().insert(key.clone(), waiters.clone());
                miss.fill = Some(Fill { pending: self.pending.clone(), key, waiters });
            }
        }
        miss.body.clear();
        miss.request.clear();
        for (n, v) in view.headers() {
            miss.request.extend(n.iter().map(u8::to_ascii_lowercase));
            miss.request.push(b':');
            miss.request.extend_from_slice(v);
            miss.request.push(b'\n');
        }
        Lookup::Miss
    }

    /// Whether the answer to the request in `miss` may be stored; what to
    /// store.
    pub fn storable(&self, miss: &Miss, buf: &[u8], resp: &ResponseHead, spans: &[HeaderSpan]) -> Option<Storable> {
        let len = match resp.body {
            crate::http::BodyKind::Length(n) => n,
            _ => return None,
        };
        if resp.status != 200 || len > self.cfg.max_entry_bytes {
            return None;
        }
        let mut shared = miss.header(b"authorization").is_none();
        let mut s = Storable { head: Vec::with_capacity(256), ttl: self.cfg.ttl, vary: Vec::new() };
        for h in spans {
            let (n, v) = (slice(buf, h.name), slice(buf, h.value));
            if n.eq_ignore_ascii_case(b"set-cookie") {
                return None;
            }
            if n.eq_ignore_ascii_case(b"vary") {
                for name in v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|n| !n.is_empty()) {
                    if name == b"*" || s.vary.len() == MAX_VARY {
                        return None;
                    }
                    s.vary.push(name.to_ascii_lowercase().into());
                }
            }
            if n.eq_ignore_ascii_case(b"cache-control") {
                if has_token(v, b"no-store") || has_token(v, b"private") || has_token(v, b"no-cache") {
                    return None;
                }
                shared |= has_token(v, b"public") || has_token(v, b"s-maxage");
                match directive(v, b"s-maxage").or_else(|| directive(v, b"max-age")) {
                    Some(0) => return None,
                    Some(secs) => s.ttl = Duration::from_secs(secs),
                    None => {}
                }
            }
            if NOT_STORED.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                continue;
            }
            s.head.extend_from_slice(n);
            s.head.extend_from_slice(b": ");
            s.head.extend_from_slice(v);
            s.head.extend_from_slice(b"\r\n");
        }
        s.vary.sort();
        s.vary.dedup();
        shared.then_some(s)
    }

    /// Stores the answer to the request in `miss` (its body taken from it);
    /// the oldest entries go to make room.
    pub fn store(&self, miss: &mut Miss, s: Storable) {
        let body = std::mem::take(&mut miss.body);
        let mut values = Vec::new();
        vary_values(&s.vary, |n| miss.header(n), &mut values);
        let key: Box<[u8]> = miss.key.as_slice().into();
        let entry = Rc::new(Entry { status: 200, head: s.head, body, stored: Instant::now(), ttl: s.ttl });
        let size = entry.size(key.len() + values.len());
        if size > self.cfg.max_entry_bytes.saturating_add(key.len() as u64 + 4096) {
            return;
        }
        let vary: Box<[Box<[u8]>]> = s.vary.into();
        let values: Box<[u8]> = values.into();
        let mut slots = self.slots.borrow_mut();
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot { vary: vary.clone(), variants: Vec::new() });
        if slot.vary != vary {
            // The target's answers now vary on other headers: start over.
            for (v, e) in slot.variants.drain(..) {
                self.forget(&e, key.len() + v.len());
            }
            slot.vary = vary;
        }
        if let Some(i) = slot.variants.iter().position(|(v, _)| *v == values) {
            let (v, e) = slot.variants.remove(i);
            self.forget(&e, key.len() + v.len());
        }
        if slot.variants.len() == MAX_VARIANTS {
            let (v, e) = slot.variants.remove(0);
            self.forget(&e, key.len() + v.len());
        }
        slot.variants.push((values.clone(), entry));
        drop(slots);
        self.bytes.set(self.bytes.get() + size);
        self.entries.set(self.entries.get() + 1);
        self.order.borrow_mut().push_back((key, values));
        self.make_room();
    }

    fn forget(&self, e: &Entry, key: usize) {
        self.bytes.set(self.bytes.get().saturating_sub(e.size(key)));
        self.entries.set(self.entries.get().saturating_sub(1));
    }

    /// Drops the oldest variants until the cache fits `maxBytes`.
    fn make_room(&self) {
        let mut order = self.order.borrow_mut();
        while self.bytes.get() > self.cfg.max_bytes {
            let Some((k, v)) = order.pop_front() else { break };
            self.remove(&k, |x| x == &v[..]);
        }
        // Stale pairs (variants replaced or purged) are dropped as they
        // come up; bound them too.
        if order.len() > 2 * self.entries.get() as usize + 64 {
            let slots = self.slots.borrow();
            order.retain(|(k, v)| slots.get(k).is_some_and(|s| s.variants.iter().any(|(x, _)| x == v)));
        }
    }

    /// Removes the variants of target `key` that `which` selects; returns
    /// how many.
    fn remove(&self, key: &[u8], which: impl Fn(&[u8]) -> bool) -> u64 {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(key) else { return 0 };
        let mut n = 0;
        slot.variants.retain(|(v, e)| {
            let keep = !which(v);
            if !keep {
                self.forget(e, key.len() + v.len());
                n += 1;
            }
            keep
        });
        if slot.variants.is_empty() {
            slots.remove(key);
        }
        n
    }

    /// Removes every entry whose path matches `path` (any host of the
    /// route): exactly (query included), or as a prefix when it ends in
    /// `*`; `None` removes everything. Returns how many went.
    pub fn purge(&self, path: Option<&str>) -> u64 {
        let targets: Vec<Box<[u8]>> = self
            .slots
            .borrow()
            .keys()
            .filter(|k| {
                let target = k.iter().position(|&b| b == b' ').map_or(&k[..0], |i| &k[i + 1..]);
                match path {
                    None => true,
                    Some(p) => match p.strip_suffix('*') {
                        Some(prefix) => target.starts_with(prefix.as_bytes()),
                        None => target == p.as_bytes(),
                    },
                }
            })
            .cloned()
            .collect();
        let n = targets.iter().map(|k| self.remove(k, |_| true)).sum();
        self.make_room();
        n
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

    #[test]
    fn saved_request_headers_and_vary_values() {
        let miss = Miss { request: b"host:a\naccept-language:en, fr\nx:\n".to_vec(), ..Miss::default() };
        assert_eq!(miss.header(b"accept-language"), Some(&b"en, fr"[..]));
        assert_eq!(miss.header(b"accept"), None);
        let names: Vec<Box<[u8]>> =
            vec![b"accept-language".as_slice().into(), b"x".as_slice().into(), b"y".as_slice().into()];
        let mut out = Vec::new();
        vary_values(&names, |n| miss.header(n), &mut out);
        assert_eq!(out, b"en, fr\n\n\r");
    }
}
