//! The impact of a dry-run change (`?dryRun=true` on any write): each
//! route it adds, removes or changes, the backends it adds and removes,
//! and for `IP_HASH` pools the share of client addresses whose backend
//! would change (`movedPercent`, over a fixed sample of addresses, with
//! health and maintenance as they are now and as the change leaves them).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use control::model::{Route, Strategy};
use control::state::State;
use serde_json::{json, Value};

use super::{each_backend, Controller};
use crate::balance::{Balancer, Node, Strategy as BalStrategy, Tried};

/// Client addresses sampled for `movedPercent`.
const SAMPLES: u32 = 2000;

impl Controller {
    /// What applying `next` would change, route by route.
    pub(super) fn impact(&self, next: &State) -> Value {
        let mut rows = Vec::new();
        for old in &self.state.routes {
            match next.route(&old.key) {
                None => rows.push(json!({"vHost": old.vhost.key(), "change": "removed",
                    "backendsAdded": [], "backendsRemoved": ids(old), "movedPercent": null})),
                Some(new) => {
                    let moved = self.moved_percent(old, new, next);
                    let (added, removed) = (minus(new, old), minus(old, new));
                    if **old != *new || moved.is_some_and(|m| m > 0.0) {
                        rows.push(json!({"vHost": new.vhost.key(), "change": "changed",
                            "backendsAdded": added, "backendsRemoved": removed, "movedPercent": moved}));
                    }
                }
            }
        }
        for new in next.routes.iter().filter(|r| self.state.route(&r.key).is_none()) {
            rows.push(json!({"vHost": new.vhost.key(), "change": "added",
                "backendsAdded": ids(new), "backendsRemoved": [], "movedPercent": null}));
        }
        json!({"routes": rows})
    }

    /// For a route whose default pool is `IP_HASH` before and after: the
    /// percentage of sampled client addresses that would get another
    /// backend.
    fn moved_percent(&self, old: &Route, new: &Route, next: &State) -> Option<f64> {
        if old.pool.strategy != Strategy::IpHash || new.pool.strategy != Strategy::IpHash {
            return None;
        }
        let before = self.pool_nodes(old, &self.state);
        let after = self.pool_nodes(new, next);
        let (b1, b2) = (Balancer::build(BalStrategy::IpHash, &before), Balancer::build(BalStrategy::IpHash, &after));
        let moved = (0..SAMPLES)
            .map(|i| IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))))
            .filter(|&ip| {
                let x = b1.pick(&before, ip, Tried::default()).map(|i| before[i].id());
                let y = b2.pick(&after, ip, Tried::default()).map(|i| after[i].id());
                x != y
            })
            .count();
        Some((moved as f64 * 1000.0 / SAMPLES as f64).round() / 10.0)
    }

    /// A route's default pool as balancer nodes, up unless down by health
    /// or in maintenance in `state`.
    fn pool_nodes(&self, r: &Route, state: &State) -> Vec<Node> {
        r.pool
            .backends
            .iter()
            .map(|b| {
                let key = Self::key(r, b);
                let n = Node::new(&b.id, b.weight);
                let maintenance = state.maintenance.contains(&(r.key.clone(), b.id.clone()));
                n.set_up(!maintenance && self.health.get(&key).is_none_or(|h| h.is_up()));
                n
            })
            .collect()
    }
}

fn ids(r: &Route) -> Vec<String> {
    each_backend(r).map(|b| b.id.clone()).collect()
}

/// Backend ids of `a` that `b` lacks.
fn minus(a: &Route, b: &Route) -> Vec<String> {
    let theirs: HashSet<&str> = each_backend(b).map(|x| x.id.as_str()).collect();
    each_backend(a).filter(|x| !theirs.contains(x.id.as_str())).map(|x| x.id.clone()).collect()
}
