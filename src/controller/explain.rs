//! `GET /api/v1/explain?host=…&path=…[&client=IP]`: what ringway would do
//! with a request, from the running state — the route and how its host
//! matched, the path rule, the path the backend would see, the policies,
//! every backend of the pool with whether it can take the request and why
//! not, and, where the strategy is deterministic (`IP_HASH`), the backend
//! the next request from that client gets. Host and path are matched by
//! the workers' own rules (`router::Router`, `router::prefix_matches`).

use std::net::IpAddr;

use control::model::{Route, Strategy, VHost};
use serde_json::{json, Value};

use super::admin::AdminReply;
use super::Controller;
use crate::balance::{Balancer, Node, Strategy as BalStrategy, Tried};
use crate::router::{prefix_matches, Router};

fn bad(field: &str, message: &str) -> AdminReply {
    AdminReply::json(400, &json!({"error": "invalidField", "field": field, "message": message}))
}

fn query<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

/// The policies that apply, as the API shows them (secrets redacted).
fn policies_view(p: &control::policy::Policies) -> Value {
    let mut m = serde_json::Map::new();
    control::policy::policies_json(p, &mut m, true);
    Value::Object(m)
}

/// The key the route's rate limit would count this request under (null
/// without a rate limit, or without the client's address when it counts
/// by address).
fn rate_key(explained: &Value, client: Option<IpAddr>, headers: &[(String, String)]) -> Value {
    match explained["policies"]["rateLimit"]["key"].as_str() {
        Some("clientIp") => client.map_or(Value::Null, |c| json!(c.to_string())),
        Some(k) => {
            let name = k.strip_prefix("header:").unwrap_or(k).to_ascii_lowercase();
            json!(headers.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str()))
        }
        None => Value::Null,
    }
}

/// A Host a client could send: a DNS name or an IP address (IPv6 in
/// brackets), with an optional `:port`.
fn valid_host(h: &str) -> bool {
    let bare = match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => h,
    };
    matches!(control::model::VHost::parse(bare), Some(VHost::Exact(_))) || bare.parse::<std::net::Ipv6Addr>().is_ok()
}

/// A header line a client could send: a token name and a visible value.
fn valid_header(name: &str, value: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

impl Controller {
    /// Answers `GET /api/v1/explain`.
    pub(super) fn explain_reply(&self, method: &str, q: &str) -> AdminReply {
        if method != "GET" {
            return AdminReply::not_allowed("GET");
        }
        let decode = |name: &str| query(q, name).map(control::api::percent_decode);
        let host = match decode("host") {
            Some(Some(h)) if valid_host(&h) => h,
            _ => {
                return bad(
                    "host",
                    "give the request's host, a name or address with an optional :port: ?host=example.com",
                )
            }
        };
        let path = match decode("path") {
            None => "/".to_string(),
            Some(Some(p)) if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => p,
            Some(_) => return bad("path", "path must start with / and be visible ASCII (percent-encode the rest)"),
        };
        let client: Option<IpAddr> = match decode("client") {
            None => None,
            Some(Some(c)) => match c.parse() {
                Ok(ip) => Some(ip),
                Err(_) => return bad("client", "client must be an IP address"),
            },
            Some(None) => return bad("client", "client must be an IP address"),
        };
        let mut table: Router<usize> = Router::default();
        for (i, r) in self.state.routes.iter().enumerate() {
            table.set(&r.vhost, i);
        }
        // `header=Name:Value`, repeatable: what header-keyed policies see.
        let mut headers = Vec::new();
        for v in q.split('&').filter_map(|kv| kv.strip_prefix("header=")) {
            match control::api::percent_decode(v).as_deref().and_then(|h| h.split_once(':')) {
                Some((n, v)) if valid_header(n, v) => {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()))
                }
                _ => return bad("header", "header must be Name:Value"),
            }
        }
        let request = json!({"host": host, "path": path, "client": client.map(|c| c.to_string()),
                             "headers": headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>()});
        let Some(route) = table.lookup(Some(host.as_bytes())).and_then(|&i| self.state.routes.get(i)) else {
            return AdminReply::json(
                200,
                &json!({"request": request, "route": null, "answer": 404,
                        "message": format!("no route matches host {host:?} and there is no catch-all route")}),
            );
        };
        let mut v = self.explain_route(route, request, &path, client);
        v["rateLimitKey"] = rate_key(&v, client, &headers);
        AdminReply::json(200, &v)
    }

    fn explain_route(&self, route: &Route, request: Value, path: &str, client: Option<IpAddr>) -> Value {
        let how = match route.vhost {
            VHost::Exact(_) => "exact",
            VHost::Wildcard(_) => "wildcard",
            VHost::Any => "catchAll",
        };
        // Longest prefix first, as the workers sort their rules.
        let mut rules: Vec<_> = route.paths.iter().collect();
        rules.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        let rule = rules.into_iter().find(|p| prefix_matches(p.prefix.as_bytes(), path.as_bytes()));
        let mut forwarded = Vec::new();
        match rule.filter(|r| r.strip_prefix) {
            Some(r) => crate::http::strip_prefix_path(r.prefix.as_bytes(), path.as_bytes(), &mut forwarded),
            None => forwarded.extend_from_slice(path.as_bytes()),
        }
        let pool = rule.map_or(&route.pool, |r| &r.pool);
        let policies = match rule {
            Some(r) => route.policies.overlay(&r.overrides.policies),
            None => (*route.policies).clone(),
        };
        let admission = self.admission_view(route);
        let full = admission["full"] == json!(true);
        let backends: Vec<(String, Value, bool)> = pool
            .backends
            .iter()
            .map(|b| {
                let (id, mut v, eligible) = self.explain_backend(route, b);
                if full && eligible {
                    v["eligible"] = json!(false);
                    v["reason"] = json!(format!(
                        "admission full: the route's {} active requests per worker are taken on every worker; \
                         the next request waits in the queue (reqQueueLength) or gets 503",
                        admission["perWorkerLimit"]
                    ));
                }
                (id, v, eligible && !full)
            })
            .collect();
        let (next, note) = self.next_backend(pool.strategy, &backends, client);
        json!({
            "request": request,
            "route": {"id": route.id, "vHost": route.vhost.key(), "match": how},
            "pathRule": rule.map(|r| json!({"prefix": r.prefix, "stripPrefix": r.strip_prefix})),
            "forwardedPath": String::from_utf8_lossy(&forwarded),
            "strategy": pool.strategy.name(),
            "policies": policies_view(&policies),
            "backends": backends.iter().map(|(_, v, _)| v.clone()).collect::<Vec<_>>(),
            "next": next,
            "nextNote": note,
            "admission": admission,
        })
    }

    /// The route's admission limit (`reqActiveLength`, shared out per
    /// worker) against the requests active on each worker now.
    fn admission_view(&self, route: &Route) -> Value {
        if route.req_active == 0 {
            return json!({"reqActiveLength": 0, "full": false});
        }
        let workers = self.workers.len().max(1) as u32;
        let limit = route.req_active.div_ceil(workers);
        let keys: Vec<_> = super::each_backend(route).map(|b| Self::key(route, b)).collect();
        let active = self.stats.inflight_by_worker(keys.iter());
        let per_worker: Vec<u32> = (0..self.workers.len()).map(|w| active.get(&w).copied().unwrap_or(0)).collect();
        let full = per_worker.iter().all(|n| *n >= limit);
        json!({"reqActiveLength": route.req_active, "perWorkerLimit": limit, "activePerWorker": per_worker,
               "reqQueueLength": route.req_queue, "full": full})
    }

    /// One backend: its state and whether it can take a request.
    fn explain_backend(&self, route: &Route, b: &control::model::Backend) -> (String, Value, bool) {
        let key = Self::key(route, b);
        let address = self.address_of(b);
        let down_since = self.down_since.get(&key);
        let open = self.stats.circuit_open_workers(&key);
        let (eligible, reason) = if self.in_maintenance(&key) {
            (false, "maintenance".to_string())
        } else if address.is_none() {
            (false, format!("unresolved: {} has no address yet", b.hostname))
        } else if self.health.get(&key).is_some_and(|h| !h.is_up()) {
            let since = down_since.map(|t| t.elapsed().as_secs());
            (false, since.map_or("down".to_string(), |s| format!("down for {s} s")))
        } else if open > 0 {
            (false, format!("circuit open on {open} of {} workers", self.workers.len()))
        } else {
            (true, "up".to_string())
        };
        let v = json!({"id": b.id, "address": address.map(|a| a.to_string()), "weight": b.weight,
                       "eligible": eligible, "reason": reason});
        (b.id.clone(), v, eligible)
    }

    /// The backend the next request from `client` gets, where that does
    /// not depend on a worker's own position (`IP_HASH`).
    fn next_backend(
        &self,
        s: Strategy,
        backends: &[(String, Value, bool)],
        client: Option<IpAddr>,
    ) -> (Value, &'static str) {
        if s != Strategy::IpHash {
            return (Value::Null, "this strategy's next pick depends on each worker's own position and load");
        }
        let Some(client) = client else {
            return (Value::Null, "IP_HASH: give ?client=IP to see its backend");
        };
        let nodes: Vec<Node> = backends
            .iter()
            .map(|(id, v, eligible)| {
                let n = Node::new(id, v["weight"].as_u64().unwrap_or(1) as u32);
                n.set_up(*eligible);
                n
            })
            .collect();
        let picked = Balancer::build(BalStrategy::IpHash, &nodes).pick(&nodes, client, Tried::default());
        match picked.and_then(|i| backends.get(i)) {
            Some((id, _, _)) => (json!(id), "IP_HASH: the same backend for this client while the pool is unchanged"),
            None => (Value::Null, "no backend can take it: the request gets 503"),
        }
    }
}
