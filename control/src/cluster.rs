//! Cluster mode's mapping between the state and etcd keys, transport-free.
//!
//! Layout under the configured prefix `P`:
//! - `P/config/routes/{vHost}`: a route, as the JSON the API takes;
//! - `P/config/maintenance/{vHost}/{backend}`: present while in maintenance;
//! - `P/config/certificates/{domain}`: `{"cert": PEM, "key": PEM}`;
//! - `P/config/_marker`: rewritten by every ringway write (so that a
//!   write's precondition sees deletes too, and the newest config
//!   revision is always a key's); absent until the prefix is seeded, and
//!   `P/config/_seeding` present while it is being seeded;
//! - `P/nodes/{nodeId}`: each live node's registration (under a lease).
//!
//! Path segments are percent-encoded. A change becomes the puts and
//! deletes of the few keys it touches ([`ops`]); a watched key's new value
//! becomes an edit of the state ([`apply`]). The state's generation is the
//! etcd revision of the last config change, the same on every node.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::api::CertCheck;
use crate::model::{validate_route, RouteDefaults};
use crate::raw::RawRoute;
use crate::state::{certificate_json, maintenance_json, route_json, Certificate, Change, State};

/// Where things live under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// What an etcd key under `P/config/` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A route, by key.
    Route(String),
    /// A maintenance flag: route key, backend id.
    Maintenance(String, String),
    /// A certificate, by domain.
    Certificate(String),
    /// The write marker (or the seeding one): no state.
    Marker,
}

/// One write to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set a key.
    Put(String, String),
    /// Remove a key.
    Delete(String),
    /// Remove every key under a prefix.
    DeletePrefix(String),
}

fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"._*:-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(segment: &str) -> Option<String> {
    crate::api::percent_decode(segment)
}

impl Layout {
    /// The layout under `prefix` (no trailing `/`).
    pub fn new(prefix: &str) -> Layout {
        Layout { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// Every config key starts with this.
    pub fn config_prefix(&self) -> String {
        format!("{}/config/", self.prefix)
    }

    /// Every node registration starts with this.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// The write marker's key.
    pub fn marker(&self) -> String {
        format!("{}/config/_marker", self.prefix)
    }

    /// Present while a node seeds the prefix (cut off: seeding resumes).
    pub fn seeding(&self) -> String {
        format!("{}/config/_seeding", self.prefix)
    }

    /// A route's key.
    pub fn route(&self, key: &str) -> String {
        format!("{}/config/routes/{}", self.prefix, encode(key))
    }

    /// A maintenance flag's key.
    pub fn maintenance(&self, key: &str, id: &str) -> String {
        format!("{}/config/maintenance/{}/{}", self.prefix, encode(key), encode(id))
    }

    /// Every maintenance flag of a route starts with this.
    pub fn maintenance_of(&self, key: &str) -> String {
        format!("{}/config/maintenance/{}/", self.prefix, encode(key))
    }

    /// A certificate's key.
    pub fn certificate(&self, domain: &str) -> String {
        format!("{}/config/certificates/{}", self.prefix, encode(domain))
    }

    /// A node's registration key.
    pub fn node(&self, id: &str) -> String {
        format!("{}/nodes/{}", self.prefix, encode(id))
    }

    /// What a config key holds (`None`: not one of ours).
    pub fn parse(&self, key: &str) -> Option<Item> {
        let rest = key.strip_prefix(&self.config_prefix())?;
        if rest == "_marker" || rest == "_seeding" {
            return Some(Item::Marker);
        }
        let (kind, name) = rest.split_once('/')?;
        match kind {
            "routes" if !name.contains('/') => Some(Item::Route(decode(name)?)),
            "certificates" if !name.contains('/') => Some(Item::Certificate(decode(name)?)),
            "maintenance" => {
                let (k, id) = name.split_once('/')?;
                (!id.contains('/')).then_some(())?;
                Some(Item::Maintenance(decode(k)?, decode(id)?))
            }
            _ => None,
        }
    }
}

/// The route and certificate a change touches.
fn touched(change: &Change) -> (Option<&str>, Option<&str>) {
    match change {
        Change::PutRoute { route, .. } => (Some(&route.key), None),
        Change::DeleteRoute { key }
        | Change::AddBackend { key, .. }
        | Change::DeleteBackend { key, .. }
        | Change::Maintenance { key, .. } => (Some(key), None),
        Change::PutCertificate { domain, .. } | Change::DeleteCertificate { domain } => (None, Some(domain)),
        Change::ReplaceRoutes { .. } => (None, None),
    }
}

/// A route's value in etcd.
pub fn route_value(r: &crate::model::Route) -> String {
    route_json(r).to_string()
}

fn certificate_value(c: &Certificate) -> String {
    certificate_json(c).to_string()
}

/// The writes that take etcd from `old` to `next` for `change` (which made
/// `next` from `old`), and the keys they depend on (for the transaction's
/// compare). `ReplaceRoutes` is not a cluster write: `None`.
pub fn ops(layout: &Layout, change: &Change, old: &State, next: &State) -> Option<(Vec<KvOp>, Vec<String>)> {
    if matches!(change, Change::ReplaceRoutes { .. }) {
        return None;
    }
    let (route, domain) = touched(change);
    let mut ops = Vec::new();
    let mut keys = Vec::new();
    if let Some(k) = route {
        let key = layout.route(k);
        match next.route(k) {
            Some(r) if old.route(k) != Some(r) => ops.push(KvOp::Put(key.clone(), route_value(r))),
            Some(_) => {}
            None if old.route(k).is_some() => {
                ops.push(KvOp::Delete(key.clone()));
                ops.push(KvOp::DeletePrefix(layout.maintenance_of(k)));
            }
            None => {}
        }
        keys.push(key);
        let of = |s: &State| s.maintenance.iter().filter(|(rk, _)| rk == k).cloned().collect::<Vec<_>>();
        let (was, now) = (of(old), of(next));
        for (rk, id) in was.iter().filter(|m| !now.contains(m)) {
            if next.route(k).is_some() {
                ops.push(KvOp::Delete(layout.maintenance(rk, id)));
            }
        }
        for (rk, id) in now.iter().filter(|m| !was.contains(m)) {
            let mk = layout.maintenance(rk, id);
            ops.push(KvOp::Put(mk.clone(), maintenance_json(rk, id).to_string()));
            keys.push(mk);
        }
    }
    if let Some(d) = domain {
        let key = layout.certificate(d);
        match next.certificates.get(d) {
            Some(c) => ops.push(KvOp::Put(key.clone(), certificate_value(c))),
            None => ops.push(KvOp::Delete(key.clone())),
        }
        keys.push(key);
    }
    Some((ops, keys))
}

/// Every key of `state`, for seeding an empty prefix.
pub fn seed(layout: &Layout, state: &State) -> Vec<(String, String)> {
    let mut kvs: Vec<(String, String)> = state.routes.iter().map(|r| (layout.route(&r.key), route_value(r))).collect();
    for (k, id) in &state.maintenance {
        kvs.push((layout.maintenance(k, id), maintenance_json(k, id).to_string()));
    }
    for (d, c) in &state.certificates {
        kvs.push((layout.certificate(d), certificate_value(c)));
    }
    kvs
}

/// What applying needs besides the state.
pub struct Context<'a> {
    /// Where keys live.
    pub layout: &'a Layout,
    /// What routes inherit.
    pub defaults: &'a RouteDefaults,
    /// The certificate check.
    pub check_certificate: CertCheck<'a>,
}

/// Applies one key's new value (`None`: deleted) to `state`. A value that
/// does not validate leaves the state as it was and says why.
pub fn apply(state: &mut State, cx: &Context<'_>, key: &str, value: Option<&[u8]>) -> Result<(), String> {
    let item = cx.layout.parse(key).ok_or_else(|| "not a ringway config key".to_string())?;
    match (item, value) {
        (Item::Marker, _) => {}
        (Item::Route(k), None) => {
            state.routes.retain(|r| r.key != k);
            state.maintenance.retain(|(rk, _)| *rk != k);
        }
        (Item::Route(k), Some(v)) => {
            let raw: RawRoute = serde_json::from_slice(v).map_err(|e| format!("not a route: {e}"))?;
            let route = validate_route(&raw, cx.defaults).map_err(|e| e.to_string())?;
            if route.key != k {
                return Err(format!("the route's vHost {:?} does not match its key ({k:?})", route.key));
            }
            match state.routes.iter().position(|r| r.key == k) {
                Some(i) if *state.routes[i] == route => {}
                Some(i) => state.routes[i] = Arc::new(route),
                None => state.routes.push(Arc::new(route)),
            }
        }
        (Item::Maintenance(k, id), None) => {
            state.maintenance.remove(&(k, id));
        }
        (Item::Maintenance(k, id), Some(_)) => {
            state.maintenance.insert((k, id));
        }
        (Item::Certificate(d), None) => {
            state.certificates.remove(&d);
        }
        (Item::Certificate(d), Some(v)) => {
            let c: Value = serde_json::from_slice(v).map_err(|e| format!("not a certificate: {e}"))?;
            let text = |f: &str| c.get(f).and_then(Value::as_str).map(str::to_string);
            let (Some(cert_pem), Some(key_pem)) = (text("cert"), text("key")) else {
                return Err("a certificate needs \"cert\" and \"key\" (PEM)".into());
            };
            let meta = (cx.check_certificate)(&cert_pem, &key_pem).map_err(|(f, m)| format!("{f}: {m}"))?;
            let acme = c.get("acme").and_then(Value::as_bool).unwrap_or(false);
            state.certificates.insert(d, meta.into_certificate(cert_pem, key_pem, acme));
        }
    }
    Ok(())
}

/// The state every key under the config prefix describes (`kvs`: key,
/// value), reusing `old`'s routes where they are unchanged (so workers
/// patch instead of rebuilding). Values that do not validate are left out
/// and named in the second result.
pub fn load<'k>(
    old: &State,
    cx: &Context<'_>,
    kvs: impl Iterator<Item = (&'k str, &'k [u8])>,
) -> (State, Vec<(String, String)>) {
    let mut state = State::default();
    let mut bad = Vec::new();
    for (k, v) in kvs {
        if let Err(e) = apply(&mut state, cx, k, Some(v)) {
            bad.push((k.to_string(), e));
        }
    }
    // Routes in etcd order (by key); unchanged ones keep their Arc.
    let olds: BTreeMap<&str, &Arc<crate::model::Route>> = old.routes.iter().map(|r| (r.key.as_str(), r)).collect();
    for r in &mut state.routes {
        if let Some(o) = olds.get(r.key.as_str()).filter(|o| ****o == **r) {
            *r = Arc::clone(o);
        }
    }
    (state, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change;
    use serde_json::json;

    fn defaults() -> RouteDefaults {
        crate::model::parse_config(r#"{"listen":["127.0.0.1:0"],"routes":[]}"#)
            .map(|c| RouteDefaults::of(&c))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn route(vhost: &str, ids: &[&str]) -> crate::model::Route {
        let backends: Vec<Value> =
            ids.iter().map(|id| json!({"id": id, "hostname": "127.0.0.1", "port": 9000})).collect();
        let raw: RawRoute =
            serde_json::from_value(json!({"vHost": vhost, "backends": backends})).unwrap_or_else(|e| panic!("{e}"));
        validate_route(&raw, &defaults()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn no_certs(_: &str, _: &str) -> Result<crate::api::CertMeta, (&'static str, String)> {
        Err(("cert", "no certificates in this test".into()))
    }

    /// Applies `ops` to a key-value map, as etcd would.
    fn run(kv: &mut BTreeMap<String, String>, ops: &[KvOp]) {
        for op in ops {
            match op {
                KvOp::Put(k, v) => {
                    kv.insert(k.clone(), v.clone());
                }
                KvOp::Delete(k) => {
                    kv.remove(k);
                }
                KvOp::DeletePrefix(p) => kv.retain(|k, _| !k.starts_with(p.as_str())),
            }
        }
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_not_ours() {
        let l = Layout::new("/rw/prod/");
        assert_eq!(l.parse(&l.route("*.example.com")), Some(Item::Route("*.example.com".into())));
        assert_eq!(l.parse(&l.route("a/b c")), Some(Item::Route("a/b c".into())));
        assert_eq!(l.parse(&l.maintenance("x.test", "b/1")), Some(Item::Maintenance("x.test".into(), "b/1".into())));
        assert_eq!(l.parse(&l.certificate("x.test")), Some(Item::Certificate("x.test".into())));
        assert_eq!(l.parse(&l.marker()), Some(Item::Marker));
        assert_eq!(l.parse("/rw/prod/config/other/x"), None);
        assert_eq!(l.parse("/rw/prod/nodes/a"), None);
        assert_eq!(l.parse("/rw/prodx/config/routes/a"), None);
        assert!(l.route("a").starts_with(&l.config_prefix()));
    }

    /// Every change, written as `ops` to a key-value map and loaded back,
    /// gives the state the change made (what every other node will see).
    #[test]
    fn changes_written_and_loaded_back_give_the_same_state() {
        let l = Layout::new("/rw");
        let d = defaults();
        let cx = Context { layout: &l, defaults: &d, check_certificate: &no_certs };
        let mut state = State::default();
        let mut kv = BTreeMap::new();
        let changes = vec![
            Change::PutRoute { route: route("a.test", &["a1", "a2"]), create: true },
            Change::PutRoute { route: route("b.test", &["b1"]), create: true },
            Change::Maintenance { key: "a.test".into(), id: "a2".into(), dead: true },
            Change::DeleteBackend { key: "a.test".into(), id: "a2".into() },
            Change::Maintenance { key: "b.test".into(), id: "b1".into(), dead: true },
            Change::DeleteRoute { key: "b.test".into() },
            Change::PutRoute { route: route("b.test", &["b1"]), create: true },
        ];
        for c in changes {
            let mut next = state.clone();
            next.apply(&c).unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
            let (ops, keys) = ops(&l, &c, &state, &next).unwrap_or_else(|| panic!("no ops for {c:?}"));
            assert!(!keys.is_empty());
            run(&mut kv, &ops);
            let (loaded, bad) = load(&state, &cx, kv.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
            assert!(bad.is_empty(), "{bad:?}");
            let mut want = next.clone();
            want.routes.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(loaded.routes, want.routes, "after {c:?}");
            assert_eq!(loaded.maintenance, next.maintenance, "after {c:?}");
            state = next;
        }
        // b.test came back without its old maintenance flag.
        assert!(state.maintenance.is_empty());
    }

    #[test]
    fn bad_values_are_refused_and_leave_the_state_alone() {
        let l = Layout::new("/rw");
        let d = defaults();
        let cx = Context { layout: &l, defaults: &d, check_certificate: &no_certs };
        let mut s = State::default();
        apply(&mut s, &cx, &l.route("a.test"), Some(route_value(&route("a.test", &["a1"])).as_bytes()))
            .unwrap_or_else(|e| panic!("{e}"));
        let before = s.clone();
        for (key, value) in [
            (l.route("a.test"), "{not json"),
            (l.route("a.test"), r#"{"vHost":"a.test","backends":[{"id":"x","hostname":"","port":0}]}"#),
            (l.route("other.test"), &route_value(&route("a.test", &["a1"]))),
            (l.certificate("a.test"), r#"{"cert":"x"}"#),
            (l.certificate("a.test"), r#"{"cert":"x","key":"y"}"#),
        ] {
            assert!(apply(&mut s, &cx, &key, Some(value.as_bytes())).is_err(), "{key} = {value}");
            assert_eq!(s, before);
        }
        assert!(apply(&mut s, &cx, "/elsewhere", None).is_err());
    }

    /// Loading reuses the Arc of every unchanged route.
    #[test]
    fn unchanged_routes_keep_their_arc() {
        let l = Layout::new("/rw");
        let d = defaults();
        let cx = Context { layout: &l, defaults: &d, check_certificate: &no_certs };
        let old = State::new(vec![route("a.test", &["a1"]), route("b.test", &["b1"])]);
        let kv = seed(&l, &old);
        let (s, bad) = load(&old, &cx, kv.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        assert!(bad.is_empty());
        assert!(s.routes.iter().all(|r| old.routes.iter().any(|o| Arc::ptr_eq(o, r))));
    }
}
