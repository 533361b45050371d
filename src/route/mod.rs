//! A route as one worker runs it: the validated config, its pools of
//! backends with their balancers, its path rules, its admission limits and
//! counters. Built per snapshot by the worker (carrying admission, counters
//! and backends over by key); read by the router and the request path.
//! Knows nothing of the worker or the request path.

pub mod admission;

use std::rc::Rc;
use std::sync::Arc;

use control::model::Route;

use crate::balance::Balancer;
use crate::stats::RouteStats;
use crate::upstream::Backend;
use admission::{Admission, Admitted};

/// What a route keeps on one worker across snapshots (carried by route
/// key): its counters and its admission, in one allocation, counters
/// first. A request touches both; with 10,000 routes every separate
/// allocation is another cache miss.
#[derive(Default)]
#[repr(C)]
pub struct RouteState {
    /// Counters.
    pub stats: RouteStats,
    /// Active and queued limits.
    pub admission: Admission,
}

/// Held while a request is active; dropping it admits the next waiter.
pub struct Permit(Option<Rc<RouteState>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.admission.release();
        }
    }
}

impl RouteState {
    /// Admits now, or after at most `wait` in the queue; `None` = refused.
    pub async fn admit(self: &Rc<Self>, wait: std::time::Duration) -> Option<Permit> {
        match self.admission.acquire(wait).await? {
            Admitted::Unlimited => Some(Permit(None)),
            Admitted::Counted => Some(Permit(Some(self.clone()))),
        }
    }
}

/// A backend pool as a worker runs it.
pub struct PoolRt {
    /// Backends in config order.
    pub backends: Vec<Rc<Backend>>,
    /// Strategy state.
    pub balancer: Balancer,
    /// Circuit breaking of its backends, if set (their state lives on each
    /// `Backend`).
    pub breaker: Option<control::policy::CircuitBreaker>,
}

/// What a request's rule decides about it: timeouts, retries, body limit.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Connect timeout.
    pub connect: std::time::Duration,
    /// Upstream timeout.
    pub upstream: std::time::Duration,
    /// Longest admission-queue wait.
    pub queue: std::time::Duration,
    /// Retries on another backend.
    pub retries: u32,
    /// Body limit (0 = none).
    pub max_body: u64,
}

impl Settings {
    /// A route's own settings.
    pub fn of(r: &Route) -> Settings {
        Settings {
            connect: r.connect,
            upstream: r.upstream,
            queue: r.queue,
            retries: r.retries,
            max_body: r.max_body_bytes,
        }
    }

    /// A path rule's: its overrides over its route's.
    pub fn of_rule(route: Settings, o: &control::model::RuleOverrides) -> Settings {
        Settings {
            connect: o.connect.unwrap_or(route.connect),
            upstream: o.upstream.unwrap_or(route.upstream),
            queue: o.queue.unwrap_or(route.queue),
            retries: o.retries.unwrap_or(route.retries),
            max_body: o.max_body_bytes.unwrap_or(route.max_body),
        }
    }
}

/// A path rule as a worker runs it.
pub struct PathRt {
    /// Prefix bytes.
    pub prefix: Box<[u8]>,
    /// Strip the prefix before forwarding.
    pub strip: bool,
    /// The Host its backends see.
    pub host: control::model::HostHeader,
    /// Its timeouts, retries and body limit.
    pub settings: Settings,
    /// Its pool.
    pub pool: PoolRt,
    /// Its policies (its own over the route's), if any.
    pub policy: Option<Rc<crate::policy::Chain>>,
}

/// A route as a worker runs it. What a request reads of its config is
/// copied here (`host`, `auto_https`, `panic_threshold`, `settings`), so
/// a request does not touch `cfg`: with 10,000 routes each line a
/// request touches is a likely cache miss.
pub struct RouteRt {
    /// Counters and admission (carried across snapshots by route key).
    pub state: Rc<RouteState>,
    /// Path rules, longest prefix first.
    pub paths: Vec<PathRt>,
    /// Its own timeouts, retries and body limit (path rules may override).
    pub settings: Settings,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub auto_https: bool,
    /// Panic mode's threshold, percent of backends up (0 = off).
    pub panic_threshold: u8,
    /// Its policies, if any.
    pub policy: Option<Rc<crate::policy::Chain>>,
    /// Default pool.
    pub pool: PoolRt,
    /// Headers to set, as bytes.
    pub headers: Vec<crate::http::HeaderPair>,
    /// The Host its backends see (path rules may override).
    pub host: control::model::HostHeader,
    /// The validated config.
    pub cfg: std::sync::Arc<Route>,
    /// Route key.
    pub key: Arc<str>,
}

impl RouteRt {
    /// The path rule serving a raw path (`None`: the route's own pool).
    pub fn rule_for(&self, path: &[u8]) -> Option<usize> {
        self.paths.iter().position(|p| crate::router::prefix_matches(&p.prefix, path))
    }

    /// The pool of a rule (see `rule_for`).
    pub fn pool(&self, rule: Option<usize>) -> &PoolRt {
        match rule.and_then(|i| self.paths.get(i)) {
            Some(p) => &p.pool,
            None => &self.pool,
        }
    }

    /// The settings for a rule (its own, else the route's).
    pub fn settings(&self, rule: Option<usize>) -> &Settings {
        match rule.and_then(|i| self.paths.get(i)) {
            Some(p) => &p.settings,
            None => &self.settings,
        }
    }

    /// The policies for a rule (its own, else the route's).
    pub fn policy(&self, rule: Option<usize>) -> Option<&Rc<crate::policy::Chain>> {
        match rule.and_then(|i| self.paths.get(i)) {
            Some(p) => p.policy.as_ref(),
            None => self.policy.as_ref(),
        }
    }

    /// The Host choice for a rule (its own, else the route's).
    pub fn host_header(&self, rule: Option<usize>) -> &control::model::HostHeader {
        match rule.and_then(|i| self.paths.get(i)) {
            Some(p) => &p.host,
            None => &self.host,
        }
    }

    /// The prefix to strip for a rule, if it strips.
    pub fn strip_prefix(&self, rule: Option<usize>) -> Option<&[u8]> {
        rule.and_then(|i| self.paths.get(i)).filter(|p| p.strip).map(|p| &p.prefix[..])
    }
}
