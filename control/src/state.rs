//! The authoritative state that the API changes: routes, maintenance flags.
//! Changes are commands applied to the state; `apply` either changes it or
//! leaves it untouched and says why. Replaying the commands that produced a
//! state rebuilds the same state (a property tested below), and the state
//! file is this state serialised.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::model::{Backend, Health, PathRule, Route, RouteDefaults, Strategy, UpstreamProtocol, VHost};
use crate::raw::RawRoute;

/// A refused change: HTTP status, a machine-readable code, the field when
/// one is to blame, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Short code (`invalidField`, `notFound`, `conflict`, …).
    pub error: &'static str,
    /// JSON path of the offending field, if any.
    pub field: Option<String>,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: u16, error: &'static str, field: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError { status, error, field, message: message.into() }
    }

    /// 404 for a missing thing.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(404, "notFound", None, what)
    }

    /// The error as its JSON body.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error, "field": self.field, "message": self.message})
    }
}

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // control-plane values, one per API call
pub enum Change {
    /// Add a route (`create`: refuse if its vHost exists) or replace one.
    PutRoute {
        /// The validated route.
        route: Route,
        /// Only create, never replace.
        create: bool,
    },
    /// Remove a route.
    DeleteRoute {
        /// Route key.
        key: String,
    },
    /// Add a backend to a route's default pool.
    AddBackend {
        /// Route key.
        key: String,
        /// The backend (id already assigned).
        backend: Backend,
    },
    /// Remove a backend (from any pool of the route).
    DeleteBackend {
        /// Route key.
        key: String,
        /// Backend id.
        id: String,
    },
    /// Set or clear maintenance on a backend.
    Maintenance {
        /// Route key.
        key: String,
        /// Backend id.
        id: String,
        /// Maintenance on.
        dead: bool,
    },
    /// Store (or replace) the certificate for a domain.
    PutCertificate {
        /// Domain (`example.com` or `*.example.com`), lowercased.
        domain: String,
        /// The validated certificate.
        certificate: Certificate,
    },
    /// Remove a domain's certificate.
    DeleteCertificate {
        /// Domain.
        domain: String,
    },
    /// Replace every route (SIGHUP: the config file's routes).
    ReplaceRoutes {
        /// The new routes.
        routes: Vec<Route>,
    },
}

/// The state the API changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Increases with every applied change.
    pub generation: u64,
    /// Routes, in order; shared (copy on write) with every clone of the
    /// state and every snapshot, so a change copies only what it touches.
    pub routes: Vec<Arc<Route>>,
    /// Backends in maintenance: (route key, backend id).
    pub maintenance: BTreeSet<(String, String)>,
    /// Certificates by domain (validated when added).
    pub certificates: BTreeMap<String, Certificate>,
}

/// A stored certificate: PEM chain, PEM key (a secret: never in responses
/// or logs), and its expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    /// The leaf's DNS names.
    pub sans: Vec<String>,
    /// The leaf's issuer.
    pub issuer: String,
    /// Start of validity, seconds since the Unix epoch (0: unknown).
    pub not_before: i64,
    /// Issued by ringway's ACME client (renewed by it; not the operator's).
    pub acme: bool,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").field("not_after", &self.not_after).field("key_pem", &"<redacted>").finish()
    }
}

fn has_backend(r: &Route, id: &str) -> bool {
    all_backends(r).any(|b| b.id == id)
}

/// Every backend of a route, its paths included.
pub fn all_backends(r: &Route) -> impl Iterator<Item = &Backend> {
    r.pool.backends.iter().chain(r.paths.iter().flat_map(|p| p.pool.backends.iter()))
}

impl State {
    /// A state holding `routes` at generation 0.
    pub fn new(routes: Vec<Route>) -> State {
        // Into a Vec of its own: `collect` would reuse the Route-sized
        // buffer in place (5 MB kept for 10,000 routes' 80 KB of pointers).
        let mut shared = Vec::with_capacity(routes.len());
        shared.extend(routes.into_iter().map(Arc::new));
        State { generation: 0, routes: shared, maintenance: BTreeSet::new(), certificates: BTreeMap::new() }
    }

    /// The route with this key.
    pub fn route(&self, key: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.key == key).map(|r| &**r)
    }

    fn route_mut(&mut self, key: &str) -> Result<&mut Route, ApiError> {
        let r = self.routes.iter_mut().find(|r| r.key == key);
        r.map(Arc::make_mut).ok_or_else(|| ApiError::not_found(format!("no route {key:?}")))
    }

    /// Applies a change; on error the state is untouched.
    pub fn apply(&mut self, change: &Change) -> Result<(), ApiError> {
        match change {
            Change::PutRoute { route, create } => match self.routes.iter().position(|r| r.key == route.key) {
                Some(_) if *create => {
                    return Err(ApiError::new(
                        409,
                        "conflict",
                        Some("vHost".into()),
                        format!("route {:?} exists", route.key),
                    ))
                }
                Some(i) => {
                    self.routes[i] = Arc::new(route.clone());
                    let keep: BTreeSet<(String, String)> = self
                        .maintenance
                        .iter()
                        .filter(|(k, id)| *k != route.key || has_backend(route, id))
                        .cloned()
                        .collect();
                    self.maintenance = keep;
                }
                None => self.routes.push(Arc::new(route.clone())),
            },
            Change::DeleteRoute { key } => {
                let before = self.routes.len();
                self.routes.retain(|r| r.key != *key);
                if self.routes.len() == before {
                    return Err(ApiError::not_found(format!("no route {key:?}")));
                }
                self.maintenance.retain(|(k, _)| k != key);
            }
            Change::AddBackend { key, backend } => {
                let r = self.route_mut(key)?;
                if has_backend(r, &backend.id) {
                    return Err(ApiError::new(
                        409,
                        "conflict",
                        Some("id".into()),
                        format!("backend id {:?} exists in this route", backend.id),
                    ));
                }
                r.pool.backends.push(backend.clone());
            }
            Change::DeleteBackend { key, id } => {
                let r = self.route_mut(key)?;
                if !has_backend(r, id) {
                    return Err(ApiError::not_found(format!("no backend {id:?} in route {key:?}")));
                }
                r.pool.backends.retain(|b| b.id != *id);
                for p in &mut r.paths {
                    p.pool.backends.retain(|b| b.id != *id);
                }
                self.maintenance.remove(&(key.clone(), id.clone()));
            }
            Change::Maintenance { key, id, dead } => {
                let r = self.route(key).ok_or_else(|| ApiError::not_found(format!("no route {key:?}")))?;
                if !has_backend(r, id) {
                    return Err(ApiError::not_found(format!("no backend {id:?} in route {key:?}")));
                }
                if *dead {
                    self.maintenance.insert((key.clone(), id.clone()));
                } else {
                    self.maintenance.remove(&(key.clone(), id.clone()));
                }
            }
            Change::PutCertificate { domain, certificate } => {
                self.certificates.insert(domain.clone(), certificate.clone());
            }
            Change::DeleteCertificate { domain } => {
                if self.certificates.remove(domain).is_none() {
                    return Err(ApiError::not_found(format!("no certificate for {domain:?}")));
                }
            }
            Change::ReplaceRoutes { routes } => {
                self.routes = routes.iter().cloned().map(Arc::new).collect();
                let live: BTreeSet<(String, String)> = self
                    .maintenance
                    .iter()
                    .filter(|(k, id)| self.routes.iter().any(|r| r.key == *k && has_backend(r, id)))
                    .cloned()
                    .collect();
                self.maintenance = live;
            }
        }
        self.generation += 1;
        Ok(())
    }

    /// The state file's content.
    pub fn to_json(&self) -> Value {
        let mut v = self.to_json_without_routes();
        v["routes"] = Value::Array(self.routes.iter().map(|r| route_json(r)).collect());
        v
    }

    /// `to_json` with `routes` empty (a writer streams them one by one).
    pub fn to_json_without_routes(&self) -> Value {
        json!({
            "version": 1,
            "generation": self.generation,
            "routes": [],
            "maintenance": self.maintenance.iter().map(|(k, id)| maintenance_json(k, id)).collect::<Vec<_>>(),
            "certificates": self.certificates.iter().map(|(d, c)| {
                let mut v = certificate_json(c);
                v["domain"] = json!(d);
                v
            }).collect::<Vec<_>>(),
        })
    }

    /// Reads a state file's content back (routes validated again).
    pub fn from_json(v: &Value, defaults: &RouteDefaults) -> Result<State, String> {
        State::from_file(StateFile::deserialize(v).map_err(|e| e.to_string())?, defaults)
    }

    /// `from_json` straight from the file's text: no JSON tree of the
    /// whole file (with 10,000 routes, megabytes that would stay resident
    /// as fragments between the routes built from it).
    pub fn from_text(text: &str, defaults: &RouteDefaults) -> Result<State, String> {
        State::from_file(serde_json::from_str(text).map_err(|e| e.to_string())?, defaults)
    }

    fn from_file(file: StateFile, defaults: &RouteDefaults) -> Result<State, String> {
        let mut state = State::default();
        let mut list = Vec::with_capacity(file.routes.len());
        let mut keys = std::collections::HashSet::with_capacity(file.routes.len());
        for (i, raw) in file.routes.iter().enumerate() {
            let route = crate::model::validate_route(raw, defaults).map_err(|e| format!("routes[{i}]: {e}"))?;
            if !keys.insert(route.key.clone()) {
                return Err(format!("routes[{i}]: duplicate vHost {:?}", route.key));
            }
            list.push(route);
        }
        drop(file.routes);
        state.routes = Vec::with_capacity(list.len());
        state.routes.extend(list.into_iter().map(Arc::new));
        for m in &file.maintenance {
            if let (Some(k), Some(id)) =
                (m.get("vHost").and_then(Value::as_str), m.get("backend").and_then(Value::as_str))
            {
                state.maintenance.insert((k.to_string(), id.to_string()));
            }
        }
        for c in &file.certificates {
            if let (Some(d), Some(cert)) = (c.get("domain").and_then(Value::as_str), certificate_from(c)) {
                state.certificates.insert(d.to_string(), cert);
            }
        }
        state.generation = file.generation;
        Ok(state)
    }
}

/// A state file, as written by `to_json`.
#[derive(serde::Deserialize)]
struct StateFile {
    #[serde(default)]
    generation: u64,
    routes: Vec<RawRoute>,
    #[serde(default)]
    maintenance: Vec<Value>,
    #[serde(default)]
    certificates: Vec<Value>,
}

/// Routes gone from or new in a route list, compared by pointer (states
/// and snapshots share unchanged routes).
#[derive(Debug)]
pub struct RouteDiff {
    /// Routes removed or replaced (the old versions).
    pub gone: Vec<Arc<Route>>,
    /// Routes added or replacing others.
    pub new: Vec<Arc<Route>>,
}

/// The difference between two route lists when at most `max` routes
/// differ on either side (else `None`): the common head and tail are
/// skipped by pointer comparison, the middles compared pair by pair.
pub fn diff_routes(old: &[Arc<Route>], new: &[Arc<Route>], max: usize) -> Option<RouteDiff> {
    let head = old.iter().zip(new).take_while(|(a, b)| Arc::ptr_eq(a, b)).count();
    let (old, new) = (&old[head..], &new[head..]);
    let tail = old.iter().rev().zip(new.iter().rev()).take_while(|(a, b)| Arc::ptr_eq(a, b)).count();
    let (old, new) = (&old[..old.len() - tail], &new[..new.len() - tail]);
    if old.len() > max || new.len() > max {
        return None;
    }
    let gone = old.iter().filter(|o| !new.iter().any(|n| Arc::ptr_eq(o, n))).cloned().collect();
    let new = new.iter().filter(|n| !old.iter().any(|o| Arc::ptr_eq(o, n))).cloned().collect();
    Some(RouteDiff { gone, new })
}

/// A maintenance flag as the state file, the API and etcd hold it.
pub(crate) fn maintenance_json(key: &str, id: &str) -> Value {
    json!({"vHost": key, "backend": id})
}

pub(crate) fn certificate_json(c: &Certificate) -> Value {
    json!({"cert": c.cert_pem, "key": c.key_pem, "notAfter": c.not_after, "notBefore": c.not_before, "sans": c.sans,
           "issuer": c.issuer, "acme": c.acme})
}

pub(crate) fn certificate_from(c: &Value) -> Option<Certificate> {
    let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let not_after = c.get("notAfter").and_then(Value::as_i64).unwrap_or(0);
    let sans = c
        .get("sans")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let issuer = field("issuer").unwrap_or_default();
    let not_before = c.get("notBefore").and_then(Value::as_i64).unwrap_or(0);
    let acme = c.get("acme").and_then(Value::as_bool).unwrap_or(false);
    Some(Certificate { cert_pem: field("cert")?, key_pem: field("key")?, not_after, sans, issuer, not_before, acme })
}

/// The change log's record of `change`, which made `next`: its generation
/// and what changed, as the new value of the one thing it touched (a
/// route or its removal, a maintenance flag, a certificate or its
/// removal), so that replaying it needs no other state. `None` for a
/// change that touches everything (`ReplaceRoutes`): write a full
/// snapshot instead.
pub fn log_record(change: &Change, next: &State) -> Option<Value> {
    let route = |key: &str| json!({"op": "route", "key": key, "route": next.route(key).map(route_json)});
    let op = match change {
        Change::PutRoute { route: r, .. } => route(&r.key),
        Change::DeleteRoute { key } | Change::AddBackend { key, .. } | Change::DeleteBackend { key, .. } => route(key),
        Change::Maintenance { key, id, dead } => json!({"op": "maintenance", "key": key, "id": id, "dead": dead}),
        Change::PutCertificate { domain, certificate } => {
            json!({"op": "certificate", "domain": domain, "certificate": certificate_json(certificate)})
        }
        Change::DeleteCertificate { domain } => json!({"op": "certificate", "domain": domain, "certificate": null}),
        Change::ReplaceRoutes { .. } => return None,
    };
    Some(json!({"generation": next.generation, "change": op}))
}

/// Applies a change-log record (from `log_record`) to `state`. A record at
/// or below the state's generation is already in it and skipped; one that
/// does not follow it, or does not apply, is an error.
pub fn replay(state: &mut State, record: &Value, defaults: &RouteDefaults) -> Result<(), String> {
    let generation = record.get("generation").and_then(Value::as_u64).ok_or("no generation")?;
    if generation <= state.generation {
        return Ok(());
    }
    if generation != state.generation + 1 {
        return Err(format!("generation {generation} does not follow {}", state.generation));
    }
    let c = record.get("change").ok_or("no change")?;
    let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("no {k}"));
    let change = match c.get("op").and_then(Value::as_str) {
        Some("route") => match c.get("route").filter(|r| !r.is_null()) {
            None => Change::DeleteRoute { key: text("key")? },
            Some(r) => {
                let raw = RawRoute::deserialize(r).map_err(|e| e.to_string())?;
                let route = crate::model::validate_route(&raw, defaults).map_err(|e| e.to_string())?;
                Change::PutRoute { route, create: false }
            }
        },
        Some("maintenance") => Change::Maintenance {
            key: text("key")?,
            id: text("id")?,
            dead: c.get("dead").and_then(Value::as_bool).ok_or("no dead")?,
        },
        Some("certificate") => match c.get("certificate").filter(|v| !v.is_null()) {
            None => Change::DeleteCertificate { domain: text("domain")? },
            Some(v) => Change::PutCertificate {
                domain: text("domain")?,
                certificate: certificate_from(v).ok_or("incomplete certificate")?,
            },
        },
        other => return Err(format!("unknown op {other:?}")),
    };
    state.apply(&change).map_err(|e| e.message)
}

fn health_json(h: &Health) -> Value {
    json!({
        "path": h.path,
        "intervalMs": h.interval.map_or(0, |d| d.as_millis() as u64),
        "timeoutMs": h.timeout.as_millis() as u64,
        "rise": h.rise,
        "fall": h.fall,
        "expectStatus": format!("{}-{}", h.expect_status.0, h.expect_status.1),
        "failTimeoutMs": h.fail_timeout.as_millis() as u64,
        "downIntervalMs": h.down_interval.as_millis() as u64,
        "host": h.host,
        "type": if h.tcp_only { "tcp" } else { "http" },
        "expectBody": h.expect_body,
        "headers": h.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "method": h.method,
        "grpc": h.grpc,
    })
}

fn backend_json(b: &Backend) -> Value {
    let mut v = json!({"id": b.id, "hostname": b.hostname, "port": b.port, "weight": b.weight});
    if let (UpstreamProtocol::Http2, Some(m)) = (b.protocol, v.as_object_mut()) {
        m.insert("protocol".into(), Value::String(b.protocol.name(b.tls.is_some()).into()));
    }
    if let (Some(t), Some(m)) = (&b.tls, v.as_object_mut()) {
        m.insert("tls".into(), Value::Bool(true));
        if let Some(sni) = &t.sni {
            m.insert("sni".into(), Value::String(sni.clone()));
        }
        if let Some(ca) = &t.ca_file {
            m.insert("caFile".into(), Value::String(ca.display().to_string()));
        }
        if t.insecure_skip_verify {
            m.insert("insecureSkipVerify".into(), Value::Bool(true));
        }
    }
    v
}

fn path_json(p: &PathRule) -> Value {
    json!({
        "prefix": p.prefix,
        "stripPrefix": p.strip_prefix,
        "strategy": p.pool.strategy.name(),
        "backends": p.pool.backends.iter().map(backend_json).collect::<Vec<_>>(),
        "hostHeader": p.host_header.as_ref().map(|h| h.name()),
        "retries": p.overrides.retries,
        "maxBodyBytes": p.overrides.max_body_bytes,
        "connectMs": p.overrides.connect.map(|d| d.as_millis() as u64),
        "upstreamMs": p.overrides.upstream.map(|d| d.as_millis() as u64),
        "queueMs": p.overrides.queue.map(|d| d.as_millis() as u64),
        "health": p.overrides.health.as_ref().map(health_json),
    })
}

/// `path_json` or `route_json` with the policies added.
fn with_policies(mut v: Value, p: &crate::policy::Policies, public: bool) -> Value {
    if let Some(m) = v.as_object_mut() {
        crate::policy::policies_json(p, m, public);
    }
    v
}

/// A route in the seed-compatible RouteConfig shape (plus our fields); it
/// validates back to the same route.
pub fn route_json(r: &Route) -> Value {
    route_json_with(r, false)
}

fn route_json_with(r: &Route, public: bool) -> Value {
    let headers: Map<String, Value> = r.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let vhost = match &r.vhost {
        VHost::Any => "*".to_string(),
        _ => r.key.clone(),
    };
    let v = json!({
        "id": r.id,
        "vHost": vhost,
        "strategy": r.pool.strategy.name(),
        "autoHttps": r.auto_https,
        "reqActiveLength": r.req_active,
        "reqQueueLength": r.req_queue,
        "authProvider": null,
        "headers": headers,
        "backends": r.pool.backends.iter().map(backend_json).collect::<Vec<_>>(),
        "ssl": r.ssl.as_ref().map(|s| json!({"cert": s.cert, "key": s.key})),
        "hostHeader": r.host_header.name(),
        "panicThresholdPercent": r.panic_threshold_percent,
        "paths": r.paths.iter().map(|p| with_policies(path_json(p), &p.overrides.policies, public)).collect::<Vec<_>>(),
        "retries": r.retries,
        "maxBodyBytes": r.max_body_bytes,
        "connectMs": r.connect.as_millis() as u64,
        "upstreamMs": r.upstream.as_millis() as u64,
        "queueMs": r.queue.as_millis() as u64,
        "health": health_json(&r.health),
    });
    with_policies(v, &r.policies, public)
}

/// `route_json` for API answers: a route's own private key, password
/// hashes and token digests are never shown.
pub fn route_json_public(r: &Route) -> Value {
    let mut v = route_json_with(r, true);
    if let Some(ssl) = v.get_mut("ssl").and_then(Value::as_object_mut) {
        ssl.insert("key".into(), Value::String("<redacted>".into()));
    }
    v
}

/// The strategy names, for messages.
pub fn strategy_names() -> [&'static str; 6] {
    [
        Strategy::RoundRobin.name(),
        Strategy::WeightedRoundRobin.name(),
        Strategy::LeastConnections.name(),
        Strategy::Random.name(),
        Strategy::IpHash.name(),
        Strategy::LeastLatency.name(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_config, validate_route, RouteDefaults};

    fn defaults() -> RouteDefaults {
        RouteDefaults::of(&parse_config("{}").expect("valid"))
    }

    fn route(host: &str, ports: &[u16]) -> Route {
        let backends: Vec<String> =
            ports.iter().map(|p| format!(r#"{{"id":"b{p}","hostname":"127.0.0.1","port":{p}}}"#)).collect();
        let raw: RawRoute =
            serde_json::from_str(&format!(r#"{{"vHost":"{host}","backends":[{}]}}"#, backends.join(","))).expect("raw");
        validate_route(&raw, &defaults()).expect("valid")
    }

    #[test]
    fn route_json_round_trips() {
        let raw: RawRoute = serde_json::from_str(
            r#"{"vHost":"*.a.com","strategy":"IP_HASH","headers":{"X-A":"1"},"retries":1,
                "backends":[{"hostname":"127.0.0.1","port":80,"weight":3}],
                "paths":[{"prefix":"/api","stripPrefix":true,"backends":[{"id":"p","hostname":"localhost","port":81}]}],
                "health":{"intervalMs":0,"path":"/hz"}}"#,
        )
        .expect("raw");
        let r = validate_route(&raw, &defaults()).expect("valid");
        let back: RawRoute = serde_json::from_value(route_json(&r)).expect("raw again");
        assert_eq!(validate_route(&back, &defaults()).expect("valid again"), r);
    }

    #[test]
    fn route_diffs_find_the_few_routes_a_change_touched() {
        let hosts = ["a.com", "b.com", "c.com", "d.com", "e.com"];
        let mut s = State::new(hosts.iter().map(|h| route(h, &[1])).collect());
        let keys = |d: &RouteDiff| {
            let k = |v: &[Arc<Route>]| v.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
            (k(&d.gone), k(&d.new))
        };
        let old = s.clone();
        let b = Backend {
            id: "x".into(),
            hostname: "127.0.0.1".into(),
            port: 9,
            weight: 1,
            tls: None,
            protocol: Default::default(),
        };
        s.apply(&Change::AddBackend { key: "c.com".into(), backend: b }).expect("applies");
        let d = diff_routes(&old.routes, &s.routes, 8).expect("small");
        assert_eq!(keys(&d), (vec!["c.com".to_string()], vec!["c.com".to_string()]), "replaced in place");
        let old = s.clone();
        s.apply(&Change::PutRoute { route: route("f.com", &[1]), create: true }).expect("applies");
        s.apply(&Change::DeleteRoute { key: "b.com".into() }).expect("applies");
        let d = diff_routes(&old.routes, &s.routes, 8).expect("small");
        assert_eq!(keys(&d), (vec!["b.com".to_string()], vec!["f.com".to_string()]), "added and removed");
        assert_eq!(keys(&diff_routes(&s.routes, &s.routes, 8).expect("same")), (vec![], vec![]));
        let other = State::new(hosts.iter().map(|h| route(h, &[1])).collect());
        assert!(diff_routes(&s.routes, &other.routes, 3).is_none(), "every route new: too large");
    }

    #[test]
    fn errors_leave_the_state_untouched() {
        let mut s = State::new(vec![route("a.com", &[1])]);
        let before = s.clone();
        assert_eq!(
            s.apply(&Change::PutRoute { route: route("a.com", &[2]), create: true }).map_err(|e| e.status),
            Err(409)
        );
        assert_eq!(s.apply(&Change::DeleteRoute { key: "b.com".into() }).map_err(|e| e.status), Err(404));
        assert_eq!(
            s.apply(&Change::DeleteBackend { key: "a.com".into(), id: "zz".into() }).map_err(|e| e.status),
            Err(404)
        );
        assert_eq!(s, before);
    }

    /// A small deterministic generator, so the property runs without crates.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn replaying_the_changes_rebuilds_the_same_state() {
        for seed in 1..40u64 {
            let mut g = Lcg(seed);
            let mut live = State::default();
            let mut log = Vec::new();
            let (mut snapshot, mut records) = (live.to_json(), Vec::new());
            for _ in 0..60 {
                let host = ["a.com", "b.com", "*.c.com", "*"][g.next(4) as usize];
                let key = host.to_string();
                let id = format!("b{}", g.next(4) + 1);
                let domain = ["a.com", "*.c.com"][g.next(2) as usize].to_string();
                let change = match g.next(8) {
                    6 => Change::PutCertificate {
                        domain,
                        certificate: Certificate {
                            cert_pem: format!("cert {}", g.next(100)),
                            key_pem: "key".into(),
                            not_after: 1_900_000_000,
                            sans: vec!["a.com".into()],
                            issuer: "CN=test".into(),
                            not_before: 1_800_000_000,
                            acme: g.next(2) == 0,
                        },
                    },
                    7 => Change::DeleteCertificate { domain },
                    0 => Change::PutRoute { route: route(host, &[1, 2]), create: g.next(2) == 0 },
                    1 => Change::DeleteRoute { key },
                    2 => Change::AddBackend {
                        key,
                        backend: Backend {
                            id,
                            hostname: "127.0.0.1".into(),
                            port: 9,
                            weight: 1,
                            tls: None,
                            protocol: Default::default(),
                        },
                    },
                    3 => Change::DeleteBackend { key, id },
                    4 => Change::Maintenance { key, id, dead: g.next(2) == 0 },
                    _ => Change::ReplaceRoutes { routes: vec![route("a.com", &[3]), route("*", &[4])] },
                };
                if live.apply(&change).is_ok() {
                    // The on-disk form: a snapshot, then change-log records.
                    match log_record(&change, &live) {
                        Some(r) => records.push(serde_json::to_string(&r).expect("record")),
                        None => {
                            snapshot = live.to_json();
                            records.clear();
                        }
                    }
                    log.push(change);
                }
            }
            let mut recovered = State::from_json(&snapshot, &defaults()).expect("snapshot");
            for r in &records {
                let v: Value = serde_json::from_str(r).expect("record parses");
                replay(&mut recovered, &v, &defaults()).expect("record replays");
            }
            assert_eq!(recovered, live, "seed {seed} via snapshot and change log");
            let mut replayed = State::default();
            for c in &log {
                replayed.apply(c).expect("a logged change applies again");
            }
            assert_eq!(replayed, live, "seed {seed}");
            // And the state file reads back to the same state.
            let back = State::from_json(&live.to_json(), &defaults()).expect("reads back");
            assert_eq!(back, live, "seed {seed} via the state file");
        }
    }
}
