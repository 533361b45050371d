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
use crate::upstream::Backend;
use admission::Admission;

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

/// A route as a worker runs it.
pub struct RouteRt {
    /// The validated config.
    pub cfg: std::sync::Arc<Route>,
    /// Route key.
    pub key: Arc<str>,
    /// Default pool.
    pub pool: PoolRt,
    /// Path rules, longest prefix first.
    pub paths: Vec<PathRt>,
    /// Headers to set, as bytes.
    pub headers: Vec<crate::http::HeaderPair>,
    /// Active/queued limits (carried across snapshots by route key).
    pub admission: Rc<Admission>,
    /// Counters (carried across snapshots by route key).
    pub stats: Rc<crate::stats::RouteStats>,
    /// Its own timeouts, retries and body limit (path rules may override).
    pub settings: Settings,
    /// Its policies, if any.
    pub policy: Option<Rc<crate::policy::Chain>>,
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
            None => &self.cfg.host_header,
        }
    }

    /// The prefix to strip for a rule, if it strips.
    pub fn strip_prefix(&self, rule: Option<usize>) -> Option<&[u8]> {
        rule.and_then(|i| self.paths.get(i)).filter(|p| p.strip).map(|p| &p.prefix[..])
    }
}
