//! `authProvider`: before a request is proxied, the worker asks an external
//! service (as nginx's `auth_request` or Traefik's ForwardAuth do), over its
//! own pooled, non-blocking connections: `GET <path>` with `X-Original-URI`,
//! `X-Original-Method`, `X-Forwarded-For` and the configured request
//! headers. A 2xx lets the request through with the configured response
//! headers copied onto it; 401 and 403 go back to the client with their
//! body (and `WWW-Authenticate`); anything else, a timeout or a provider
//! that cannot be reached is 503: it fails closed. Verdicts may be cached
//! per worker (`cacheMs`), keyed by the forwarded headers' values.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::Instant;

use control::policy::AuthProvider;
use sha2::{Digest, Sha256};

use crate::http::{slice, HeadLimits, Method, RequestView};
use crate::upstream::{exchange, ConnPool, PoolKey};

/// Most bytes of a provider's answer body kept (for a 401/403 page).
const MAX_BODY: usize = 64 * 1024;
/// Most verdicts cached per worker and rule.
const MAX_CACHED: usize = 10_000;

/// What the provider said.
#[derive(Clone)]
pub enum Verdict {
    /// Allowed; these header lines go on the upstream request.
    Pass(Vec<u8>),
    /// Denied: this status (401 or 403), header lines and body go back.
    Deny(u16, Vec<u8>, Vec<u8>),
    /// No usable answer: 503.
    Unavailable,
}

/// One rule's provider, with its connections and verdict cache.
pub struct ProviderRt {
    cfg: AuthProvider,
    pool: ConnPool,
    cache: RefCell<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl ProviderRt {
    /// The runtime form of `cfg`.
    pub fn new(cfg: &AuthProvider) -> ProviderRt {
        let pool = ConnPool::new(PoolKey { addr: cfg.addr, tls: None, h2: false }, None);
        ProviderRt { cfg: cfg.clone(), pool, cache: RefCell::default() }
    }

    /// Header names whose client copies never reach the backend.
    pub fn copied(&self) -> &[String] {
        &self.cfg.copy
    }

    /// Asks the provider about `view` (or reuses a cached verdict).
    pub async fn check(&self, view: &RequestView<'_>, client: IpAddr) -> Verdict {
        let key = (!self.cfg.cache.is_zero()).then(|| self.cache_key(view));
        if let Some(k) = &key {
            if let Some((until, v)) = self.cache.borrow().get(k) {
                if Instant::now() < *until {
                    return v.clone();
                }
            }
        }
        let request = self.request(view, client);
        let verdict = match monoio::time::timeout(self.cfg.timeout, self.ask(&request)).await {
            Ok(Some(v)) => v,
            _ => Verdict::Unavailable,
        };
        if let (Some(k), false) = (key, matches!(verdict, Verdict::Unavailable)) {
            let mut cache = self.cache.borrow_mut();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(k, (Instant::now() + self.cfg.cache, verdict.clone()));
        }
        verdict
    }

    fn cache_key(&self, view: &RequestView<'_>) -> [u8; 32] {
        let mut h = Sha256::new();
        for name in &self.cfg.forward {
            h.update(view.header(name.as_bytes()).unwrap_or(b""));
            h.update([0u8]);
        }
        h.finalize().into()
    }

    /// The provider's request.
    fn request(&self, view: &RequestView<'_>, client: IpAddr) -> Vec<u8> {
        let mut r = Vec::with_capacity(512);
        let _ = write!(r, "GET {} HTTP/1.1\r\nhost: {}\r\nx-original-uri: ", self.cfg.path, self.cfg.host);
        r.extend_from_slice(view.target());
        r.extend_from_slice(b"\r\nx-original-method: ");
        r.extend_from_slice(view.method());
        let _ = write!(r, "\r\nx-forwarded-for: {client}\r\n");
        for name in &self.cfg.forward {
            if let Some(v) = view.header(name.as_bytes()) {
                r.extend_from_slice(name.as_bytes());
                r.extend_from_slice(b": ");
                r.extend_from_slice(v);
                r.extend_from_slice(b"\r\n");
            }
        }
        r.extend_from_slice(b"\r\n");
        r
    }

    /// One exchange with the provider; `None` when it failed.
    async fn ask(&self, request: &[u8]) -> Option<Verdict> {
        let mut s = match self.pool.take_idle(Instant::now(), true) {
            Some(s) => s,
            None => crate::upstream::open(self.cfg.addr, None).await.ok()?,
        };
        let mut buf = request.to_vec();
        if !exchange::write_all(&mut s, &mut buf).await {
            return None;
        }
        buf.clear();
        let mut spans = Vec::new();
        let limits = HeadLimits { max_head_bytes: 16 * 1024, max_headers: 100 };
        let head = exchange::read_final_head(&mut s, &mut buf, &limits, Method::Get, &mut spans).await?;
        let wanted = |names: &[&str], out: &mut Vec<u8>| {
            for sp in &spans {
                let n = slice(&buf, sp.name);
                if names.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(n)) {
                    out.extend_from_slice(n);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(slice(&buf, sp.value));
                    out.extend_from_slice(b"\r\n");
                }
            }
        };
        let mut lines = Vec::new();
        let verdict = match head.status {
            200..=299 => {
                let copy: Vec<&str> = self.cfg.copy.iter().map(String::as_str).collect();
                wanted(&copy, &mut lines);
                Verdict::Pass(lines)
            }
            401 | 403 => {
                wanted(&["www-authenticate", "content-type"], &mut lines);
                Verdict::Deny(head.status, lines, Vec::new())
            }
            _ => Verdict::Unavailable,
        };
        let mut rest = buf.split_off(head.head_len);
        let mut body = Vec::new();
        let complete = exchange::read_body(&mut s, &mut rest, head.body, MAX_BODY, &mut |d| {
            body.extend_from_slice(&d[..d.len().min(MAX_BODY.saturating_sub(body.len()))])
        })
        .await;
        if complete && head.keep_alive {
            self.pool.put_idle(s, Instant::now());
        }
        Some(match verdict {
            Verdict::Deny(status, lines, _) => Verdict::Deny(status, lines, body),
            v => v,
        })
    }
}
