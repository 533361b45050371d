//! Traffic policies as a worker runs them: a route's (or path rule's)
//! chain, built when a snapshot arrives, run in a fixed order on the
//! request path — CORS preflight → auth → rate limit — each answering the
//! client itself or letting the request through. A route without policies
//! has no chain: nothing runs, nothing is allocated.
//!
//! One file per policy: `auth` (Basic, Bearer), `ratelimit` (a token
//! bucket per key, shared by every worker), `cors`.

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod cors;
pub mod provider;
pub mod ratelimit;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use control::policy::{Policies, RateKey};

use crate::http::RequestView;

/// One route's (or path rule's) policies, ready to run.
pub struct Chain {
    /// CORS, if set.
    pub cors: Option<cors::CorsRt>,
    /// Auth, if set (and not `none`).
    pub auth: Option<auth::AuthRt>,
    /// An external auth provider, if set.
    pub provider: Option<provider::ProviderRt>,
    /// The rate limit, shared by every worker, and what it counts by.
    pub rate: Option<(Arc<ratelimit::Limiter>, RateKey)>,
    /// The response cache, if set.
    pub cache: Option<cache::CacheRt>,
}

/// What the chain decided.
pub enum Decision {
    /// Let it through (CORS headers, if any, are in `Request::cors`).
    Pass,
    /// Answer a CORS preflight: 204 with these header lines.
    Preflight,
    /// A preflight or request from an origin (or for a method) not allowed.
    Forbidden,
    /// No (or wrong) credentials: 401 with this `WWW-Authenticate` line.
    Unauthorized(Rc<[u8]>),
    /// Credential checks are backed up, or the auth provider gave no
    /// usable answer: 503.
    Busy,
    /// The auth provider said no: this status (401, 403), its header lines
    /// in `Request::headers` and its body in `Request::body`.
    Denied(u16),
    /// Over the rate limit: 429.
    Limited(ratelimit::Refusal),
    /// A fresh cached answer.
    Cached(Rc<cache::Entry>),
}

/// What a request shows the chain.
pub struct Request<'a, 'v> {
    /// The request.
    pub view: &'a RequestView<'v>,
    /// The client's address.
    pub client: IpAddr,
    /// Header lines to add to the response (CORS), or to a preflight answer.
    pub headers: &'a mut Vec<u8>,
    /// Header lines to add to the upstream request (a provider's).
    pub upstream: &'a mut Vec<u8>,
    /// The body of a provider's refusal.
    pub body: &'a mut Vec<u8>,
    /// On a cache miss: what storing its answer needs.
    pub cache: &'a mut cache::Miss,
}

impl Chain {
    /// Runs the policies in order (CORS, auth, auth provider, rate limit,
    /// cache lookup);
    /// the first that answers decides.
    pub async fn run(&self, req: &mut Request<'_, '_>) -> Decision {
        if let Some(c) = &self.cors {
            match c.check(req.view, req.headers) {
                cors::Outcome::Preflight => return Decision::Preflight,
                cors::Outcome::Forbidden => return Decision::Forbidden,
                cors::Outcome::Pass => {}
            }
        }
        if let Some(a) = &self.auth {
            match a.check(req.view.header(b"authorization")).await {
                auth::Verdict::Pass => {}
                auth::Verdict::Deny => return Decision::Unauthorized(a.challenge()),
                auth::Verdict::Busy => return Decision::Busy,
            }
        }
        if let Some(p) = &self.provider {
            match p.check(req.view, req.client).await {
                provider::Verdict::Pass(lines) => req.upstream.extend_from_slice(&lines),
                provider::Verdict::Deny(status, lines, body) => {
                    req.headers.clear();
                    req.headers.extend_from_slice(&lines);
                    req.body.extend_from_slice(&body);
                    return Decision::Denied(status);
                }
                provider::Verdict::Unavailable => return Decision::Busy,
            }
        }
        if let Some((limiter, key)) = &self.rate {
            let refused = match key {
                RateKey::ClientIp => match req.client {
                    IpAddr::V4(ip) => limiter.check(&ip.octets()),
                    IpAddr::V6(ip) => limiter.check(&ip.octets()),
                },
                RateKey::Header(h) => limiter.check(req.view.header(h.as_bytes()).unwrap_or(b"")),
            };
            if let Err(r) = refused {
                return Decision::Limited(r);
            }
        }
        if let Some(c) = &self.cache {
            match c.lookup(req.view, req.cache).await {
                cache::Lookup::Hit(entry) => return Decision::Cached(entry),
                cache::Lookup::Miss => req.headers.extend_from_slice(b"x-cache: MISS\r\n"),
                cache::Lookup::Bypass => {}
            }
        }
        Decision::Pass
    }
}

/// A worker's chains, by route key and rule prefix, kept while their
/// config is unchanged (a snapshot that does not touch a route keeps its
/// verification cache).
#[derive(Default)]
pub struct Chains {
    by_rule: RefCell<HashMap<RuleKey, (Policies, Rc<Chain>)>>,
}

/// A route key and a rule prefix ("" for the route itself).
type RuleKey = (Arc<str>, Box<str>);

impl Chains {
    /// The chain for these policies of `route`/`prefix` ("" for the route
    /// itself): the last one when they are unchanged, else a new one.
    /// `None` when there is nothing to run.
    pub fn get(&self, route: &Arc<str>, prefix: &str, p: &Policies, next: &mut Chains) -> Option<Rc<Chain>> {
        if p.is_empty() {
            return None;
        }
        let key = (route.clone(), Box::from(prefix));
        let kept = self.by_rule.borrow().get(&key).filter(|(old, _)| old == p).map(|(_, c)| c.clone());
        let chain = kept.unwrap_or_else(|| Rc::new(build(route, prefix, p)));
        next.by_rule.borrow_mut().insert(key, (p.clone(), chain.clone()));
        Some(chain)
    }

    /// Drops the cache entries of `route` (every rule) matching `path`.
    pub fn purge(&self, route: &str, path: Option<&str>) -> u64 {
        let chains = self.by_rule.borrow();
        let caches = chains.iter().filter(|((r, _), _)| &**r == route).filter_map(|(_, (_, c))| c.cache.as_ref());
        caches.map(|c| c.purge(path)).sum()
    }

    /// Bytes and entries in every cache of this worker.
    pub fn cache_level(&self) -> (u64, u64) {
        let chains = self.by_rule.borrow();
        let levels = chains.values().filter_map(|(_, c)| c.cache.as_ref()).map(|c| c.level());
        levels.fold((0, 0), |(b, e), (x, y)| (b + x, e + y))
    }

    /// Forgets every chain of `route` (removed or rebuilt).
    pub fn forget(&self, route: &str) {
        self.by_rule.borrow_mut().retain(|(r, _), _| &**r != route);
    }

    /// Adds `more`'s chains (a delta's).
    pub fn merge(&self, more: Chains) {
        self.by_rule.borrow_mut().extend(more.by_rule.into_inner());
    }

    /// Takes `next`'s chains (what the last snapshot still uses).
    pub fn replace(&self, next: Chains) {
        *self.by_rule.borrow_mut() = next.by_rule.into_inner();
    }
}

fn build(route: &str, prefix: &str, p: &Policies) -> Chain {
    Chain {
        cors: p.cors.as_ref().map(cors::CorsRt::new),
        auth: p.auth.as_ref().and_then(auth::AuthRt::new),
        provider: p.auth_provider.as_ref().map(provider::ProviderRt::new),
        cache: p.cache.as_ref().map(cache::CacheRt::new),
        rate: p.rate_limit.as_ref().map(|r| (ratelimit::shared(route, prefix, r), r.key.clone())),
    }
}
