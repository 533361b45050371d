//! A worker's routing state from a snapshot, built in full or as a delta.
//!
//! Snapshots share unchanged routes with the last one (the same
//! `Arc<Route>`). When a snapshot differs from the last only in a few
//! routes, and resolved addresses and TLS state are the same, only those
//! routes are built; the rest are kept as they are, with their backends,
//! pools, balancer state, admission, counters and policy chains, and the
//! host table is patched. A change to one of 10,000 routes costs one
//! route. Otherwise (the first snapshot, new addresses or certificates, a
//! large change) everything is built again, carrying over backends whose
//! id, address, weight and TLS settings are unchanged, and admission,
//! counters and chains by route key (from the route built before).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::sync::Arc;

use control::messages::{BackendKey, Snapshot};
use control::model::{HostHeader, Route};
use control::state::{diff_routes, RouteDiff};

use super::{strategy, upstream_tls, upstream_tls_key, Active, Worker};
use crate::balance::Balancer;
use crate::route::{PathRt, PoolRt, RouteRt, RouteState, Settings};
use crate::router::{HostHasher, Router};
use crate::tls::TlsState;
use crate::upstream::{Backend, ConnPool, PoolKey};

/// Maps keyed by config data (never by request data): a fast unkeyed hash.
pub(super) type ConfigMap<K, V> = HashMap<K, V, BuildHasherDefault<HostHasher>>;

/// Most routes a delta builds; a larger change is built in full.
const MAX_DELTA: usize = 64;

/// What the last `apply` built from, and the routes it built.
#[derive(Default)]
pub(super) struct Built {
    /// The last snapshot's routes, in order.
    list: Vec<Arc<Route>>,
    resolved: Vec<(String, u16, std::net::SocketAddr)>,
    tls: Option<Arc<TlsState>>,
    down: HashSet<BackendKey>,
    routes: ConfigMap<Arc<str>, Rc<RouteRt>>,
}

impl Built {
    fn same_inputs(&self, snap: &Snapshot, tls: &Option<Arc<TlsState>>) -> bool {
        let same_tls = match (&self.tls, tls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_tls && self.resolved == snap.resolved
    }
}

/// Builds routes: reads the worker's current maps (to carry things over)
/// and fills fresh ones for what it built.
struct Builder<'a> {
    w: &'a Worker,
    snap: &'a Snapshot,
    tls: Option<&'a TlsState>,
    backends: &'a ConfigMap<BackendKey, Rc<Backend>>,
    pools: &'a ConfigMap<PoolKey, Rc<ConnPool>>,
    /// The routes built before, whose admission and counters a route of
    /// the same key keeps.
    prev: &'a ConfigMap<Arc<str>, Rc<RouteRt>>,
    fresh: Fresh,
}

/// What a build made or kept, by key.
#[derive(Default)]
struct Fresh {
    backends: ConfigMap<BackendKey, Rc<Backend>>,
    pools: ConfigMap<PoolKey, Rc<ConnPool>>,
    chains: crate::policy::Chains,
}

impl Builder<'_> {
    fn route(&mut self, r: &Arc<Route>) -> Rc<RouteRt> {
        let key: Arc<str> = Arc::from(r.key.as_str());
        let mut pool = self.pool(&key, &r.pool, &r.host_header);
        pool.breaker = r.policies.circuit_breaker.clone();
        let mut paths: Vec<PathRt> = r.paths.iter().map(|p| self.path(&key, r, p)).collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        let headers = r.headers.iter().map(|(k, v)| (k.as_bytes().into(), v.as_bytes().into())).collect();
        let prev = self.prev.get(&key);
        let state: Rc<RouteState> = prev.map(|p| p.state.clone()).unwrap_or_default();
        state.admission.set_limits(r.req_active, r.req_queue, self.w.workers);
        let settings = Settings::of(r);
        let policy = self.w.chains.get(&key, "", &r.policies, &mut self.fresh.chains);
        Rc::new(RouteRt {
            cfg: r.clone(),
            host: r.host_header.clone(),
            auto_https: r.auto_https,
            panic_threshold: r.panic_threshold_percent,
            key,
            pool,
            paths,
            headers,
            state,
            settings,
            policy,
        })
    }

    fn path(&mut self, key: &Arc<str>, r: &Route, p: &control::model::PathRule) -> PathRt {
        let policies = r.policies.overlay(&p.overrides.policies);
        let mut pool = self.pool(key, &p.pool, p.host_header.as_ref().unwrap_or(&r.host_header));
        pool.breaker = policies.circuit_breaker.clone();
        PathRt {
            prefix: p.prefix.as_bytes().into(),
            strip: p.strip_prefix,
            host: p.host_header.clone().unwrap_or_else(|| r.host_header.clone()),
            settings: Settings::of_rule(Settings::of(r), &p.overrides),
            pool,
            policy: self.w.chains.get(key, &p.prefix, &policies, &mut self.fresh.chains),
        }
    }

    fn pool(&mut self, key: &Arc<str>, pool: &control::model::Pool, host: &HostHeader) -> PoolRt {
        let backends: Vec<Rc<Backend>> = pool.backends.iter().map(|b| self.backend(key, b, host)).collect();
        let balancer = Balancer::build(strategy(pool.strategy), &backends);
        PoolRt { backends, balancer, breaker: None }
    }

    /// The backend as before when its address, weight and TLS settings are
    /// unchanged (its health, pool and counters kept), else a new one.
    fn backend(&mut self, key: &Arc<str>, b: &control::model::Backend, host: &HostHeader) -> Rc<Backend> {
        let bkey = BackendKey { route: key.clone(), backend: Arc::from(b.id.as_str()) };
        let h2 = b.protocol == control::model::UpstreamProtocol::Http2;
        let pkey = self.snap.address_of(b).map(|addr| PoolKey { addr, tls: upstream_tls_key(b, host), h2 });
        let backend = match self.backends.get(&bkey) {
            Some(prev)
                if prev.pool.as_ref().map(|p| p.key()) == pkey.as_ref()
                    && prev.weight == b.weight
                    && *prev.hostname == *b.hostname =>
            {
                prev.clone()
            }
            _ => {
                let conns = pkey.map(|k| self.conn_pool(k));
                Rc::new(Backend::new(bkey.clone(), conns, b))
            }
        };
        if let Some(p) = &backend.pool {
            self.fresh.pools.entry(p.key().clone()).or_insert_with(|| p.clone());
        }
        backend.node.set_up(backend.addr.is_some() && !self.snap.down.contains(&bkey));
        self.fresh.backends.insert(bkey, backend.clone());
        backend
    }

    fn conn_pool(&mut self, k: PoolKey) -> Rc<ConnPool> {
        let (pools, tls) = (self.pools, self.tls);
        let p = self.fresh.pools.entry(k.clone()).or_insert_with(|| {
            pools.get(&k).cloned().unwrap_or_else(|| Rc::new(ConnPool::new(k.clone(), upstream_tls(tls, &k))))
        });
        p.clone()
    }
}

/// Every backend of a route (its pool's and its rules').
fn backends_of(rt: &RouteRt) -> impl Iterator<Item = &Rc<Backend>> {
    std::iter::once(&rt.pool).chain(rt.paths.iter().map(|p| &p.pool)).flat_map(|p| p.backends.iter())
}

impl Worker {
    /// Applies a snapshot: as a delta when it differs from the last in a
    /// few routes and nothing else they are built from changed; else in
    /// full.
    pub fn apply(&self, snap: &Snapshot) {
        let tls = self.apply_tls(snap);
        let mut built = self.built.borrow_mut();
        let delta = built.same_inputs(snap, &tls).then(|| diff_routes(&built.list, &snap.routes, MAX_DELTA));
        let router = match delta.flatten() {
            Some(d) => self.apply_delta(snap, tls.as_deref(), &mut built, d),
            None => self.apply_full(snap, tls.as_deref(), &mut built),
        };
        built.list.clone_from(&snap.routes);
        built.resolved.clone_from(&snap.resolved);
        built.tls = tls;
        built.down.clone_from(&snap.down);
        *self.active.borrow_mut() = Rc::new(Active {
            generation: snap.generation,
            router,
            limits: snap.limits,
            http2: snap.http2,
            timeouts: snap.timeouts,
        });
    }

    fn builder<'a>(
        &'a self,
        snap: &'a Snapshot,
        tls: Option<&'a TlsState>,
        maps: &'a Maps<'_>,
        prev: &'a ConfigMap<Arc<str>, Rc<RouteRt>>,
    ) -> Builder<'a> {
        Builder { w: self, snap, tls, backends: &maps.backends, pools: &maps.pools, prev, fresh: Fresh::default() }
    }

    fn apply_full(&self, snap: &Snapshot, tls: Option<&TlsState>, built: &mut Built) -> Router {
        let mut maps = self.maps();
        let mut b = self.builder(snap, tls, &maps, &built.routes);
        let routes: Vec<Rc<RouteRt>> = snap.routes.iter().map(|r| b.route(r)).collect();
        let fresh = b.fresh;
        // Addresses no backend uses any more: close their idle connections
        // now; in-flight requests hold their own Rc and finish.
        for (a, p) in maps.pools.iter() {
            if !fresh.pools.contains_key(a) {
                p.clear_idle();
            }
        }
        *maps.backends = fresh.backends;
        *maps.pools = fresh.pools;
        self.chains.replace(fresh.chains);
        built.routes = routes.iter().map(|rt| (rt.key.clone(), rt.clone())).collect();
        Router::new(&routes)
    }

    fn apply_delta(&self, snap: &Snapshot, tls: Option<&TlsState>, built: &mut Built, d: RouteDiff) -> Router {
        let mut maps = self.maps();
        let mut b = self.builder(snap, tls, &maps, &built.routes);
        let new: Vec<Rc<RouteRt>> = d.new.iter().map(|r| b.route(r)).collect();
        let fresh = b.fresh;
        // The host table, patched: taken from the current state when
        // nothing else holds it (no request in flight), else copied.
        let mut router = {
            let mut cur = self.active.borrow_mut();
            match Rc::get_mut(&mut cur) {
                Some(a) => std::mem::take(&mut a.router),
                None => cur.router.clone(),
            }
        };
        // What the removed and replaced routes held, unless built again.
        let mut orphans: Vec<Rc<ConnPool>> = Vec::new();
        for key in d.gone.iter().map(|r| r.key.as_str()) {
            let Some(old) = built.routes.remove(key) else { continue };
            router.remove(&old);
            for b in backends_of(&old).filter(|b| !fresh.backends.contains_key(&b.key)) {
                maps.backends.remove(&b.key);
                orphans.extend(b.pool.clone());
            }
            self.chains.forget(key);
        }
        maps.backends.extend(fresh.backends);
        maps.pools.extend(fresh.pools);
        self.chains.merge(fresh.chains);
        for rt in new {
            router.insert(&rt);
            built.routes.insert(rt.key.clone(), rt);
        }
        // Maintenance changes reach backends of unchanged routes here.
        for k in built.down.symmetric_difference(&snap.down) {
            if let Some(b) = maps.backends.get(k) {
                b.node.set_up(b.addr.is_some() && !snap.down.contains(k));
            }
        }
        // Pools no backend uses any more: close their idle connections.
        for p in orphans {
            if !maps.backends.values().any(|b| b.pool.as_ref().is_some_and(|x| Rc::ptr_eq(x, &p))) {
                p.clear_idle();
                maps.pools.remove(p.key());
            }
        }
        router
    }

    fn maps(&self) -> Maps<'_> {
        Maps { backends: self.backends.borrow_mut(), pools: self.pools.borrow_mut() }
    }
}

/// The worker's maps, borrowed for a build.
struct Maps<'w> {
    backends: std::cell::RefMut<'w, ConfigMap<BackendKey, Rc<Backend>>>,
    pools: std::cell::RefMut<'w, ConfigMap<PoolKey, Rc<ConnPool>>>,
}
