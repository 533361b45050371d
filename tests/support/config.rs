//! Config builders: `route`, `config`, `catch_all`, `set`, `with_admin`.
//! They return `serde_json::Value`s that `Ringway::start` writes to a file.

use super::backend::BackendHandle;
use super::{json, Value};

/// A route on `vhost` with `strategy` over `backends` (config entries).
pub fn route(vhost: &str, strategy: &str, backends: Vec<Value>) -> Value {
    json!({"vHost": vhost, "strategy": strategy, "backends": backends})
}

/// A full config around `routes`: port 0, active health checks off.
pub fn config(routes: Vec<Value>) -> Value {
    json!({
        "listen": ["127.0.0.1:0"],
        "health": {"intervalMs": 0},
        "timeouts": {"connectMs": 1000, "upstreamMs": 10000, "drainMs": 5000},
        "routes": routes,
    })
}

/// One catch-all route over `backends`.
pub fn catch_all(strategy: &str, backends: &[&BackendHandle]) -> Value {
    config(vec![route("*", strategy, backends.iter().map(|b| b.config()).collect())])
}

/// Sets `cfg[section][key] = value`, creating the section.
pub fn set(mut cfg: Value, section: &str, key: &str, value: Value) -> Value {
    let obj = cfg.as_object_mut().unwrap();
    let sec = obj.entry(section.to_string()).or_insert_with(|| json!({}));
    sec.as_object_mut().unwrap().insert(key.to_string(), value);
    cfg
}

/// `cfg` with an admin listener on a free loopback port (and `token`, if any).
pub fn with_admin(mut cfg: Value, token: Option<&str>) -> Value {
    let mut admin = json!({"listen": "127.0.0.1:0"});
    if let Some(t) = token {
        admin["token"] = json!(t);
    }
    cfg["admin"] = admin;
    cfg
}
