//! Per-route traffic policies as configured and validated: auth (Basic,
//! Bearer), rate limits, CORS. A path rule's policies replace its route's,
//! policy by policy. The data plane builds their runtime state (limiters,
//! verification caches) per snapshot; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::model::{join, Errs};

/// `auth`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAuth {
    /// `"basic"`, `"bearer"` or `"none"` (a path rule opting out).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Basic: the realm named in `WWW-Authenticate`.
    pub realm: Option<String>,
    /// Basic: user name → bcrypt or argon2id hash.
    pub users: Option<BTreeMap<String, String>>,
    /// Bearer: the SHA-256 of each accepted token, in hex.
    pub tokens: Option<Vec<String>>,
}

/// `rateLimit`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained rate per key.
    pub requests_per_second: Option<u64>,
    /// Requests a key may make at once beyond the rate (bucket size).
    pub burst: Option<u64>,
    /// `"clientIp"` (default) or `"header:Name"`.
    pub key: Option<String>,
}

/// `cors`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCors {
    /// Origins allowed (`scheme://host[:port]`), or `["*"]`.
    pub allow_origins: Option<Vec<String>>,
    /// Methods a preflight allows.
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a preflight allows.
    pub allow_headers: Option<Vec<String>>,
    /// Response headers scripts may read.
    pub expose_headers: Option<Vec<String>>,
    /// How long a browser may cache a preflight.
    pub max_age_s: Option<u64>,
    /// Allow credentials (never with `*`).
    pub allow_credentials: Option<bool>,
}

/// `circuitBreaker`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: Option<u64>,
    /// Error rate over the window that opens it (0 = off).
    pub error_rate_percent: Option<u64>,
    /// Requests in the window before the rate counts.
    pub min_requests: Option<u64>,
    /// The error-rate window.
    pub window_ms: Option<u64>,
    /// How long it stays open (doubling on repeated trips, capped).
    pub open_ms: Option<u64>,
    /// Trial requests let through half-open.
    pub half_open_requests: Option<u64>,
    /// Count 5xx answers from the backend as failures.
    pub count_status5xx: Option<bool>,
}

/// A circuit breaker per backend: trips on live-traffic failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Error rate (percent) over `window` that opens it; 0 = off.
    pub error_rate_percent: u8,
    /// Requests in the window before the rate counts.
    pub min_requests: u32,
    /// The error-rate window.
    pub window: std::time::Duration,
    /// The first open period (doubled on each trip in a row, up to 64x).
    pub open: std::time::Duration,
    /// Trial requests let through half-open.
    pub half_open_requests: u32,
    /// 5xx answers count as failures.
    pub count_5xx: bool,
}

/// A route's (or path rule's) policies; `None`: not set here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// Who may pass.
    pub auth: Option<Auth>,
    /// How often each key may pass.
    pub rate_limit: Option<RateLimit>,
    /// Cross-origin requests from browsers.
    pub cors: Option<Cors>,
    /// Per-backend circuit breaking on live traffic.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// An external service that decides (nginx `auth_request`).
    pub auth_provider: Option<AuthProvider>,
    /// A response cache per worker.
    pub cache: Option<Cache>,
}

/// `cache`, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCache {
    /// Freshness when the response gives none.
    pub ttl_ms: Option<u64>,
    /// Memory per worker for this route's entries.
    pub max_bytes: Option<u64>,
    /// Largest response stored.
    pub max_entry_bytes: Option<u64>,
}

/// A response cache (per worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Freshness when the response gives none.
    pub ttl: std::time::Duration,
    /// Bytes per worker, at most.
    pub max_bytes: u64,
    /// Largest response (head and body) stored.
    pub max_entry_bytes: u64,
}

fn cache_from(c: &RawCache, path: &str, errs: &mut Errs) -> Option<Cache> {
    let before = errs.list.len();
    let ttl = match c.ttl_ms {
        None => 300_000,
        Some(t) if t == 0 || t > 31_536_000_000 => {
            errs.push(join(path, "ttlMs"), "must be between 1 and 31536000000");
            1
        }
        Some(t) => t,
    };
    let max_bytes = c.max_bytes.unwrap_or(64 << 20);
    if !(1024..=1 << 40).contains(&max_bytes) {
        errs.push(join(path, "maxBytes"), "must be between 1024 and 2^40");
    }
    let max_entry_bytes = c.max_entry_bytes.unwrap_or(1 << 20);
    if max_entry_bytes == 0 || max_entry_bytes > max_bytes {
        errs.push(join(path, "maxEntryBytes"), "must be between 1 and maxBytes");
    }
    (errs.list.len() == before).then_some(Cache {
        ttl: std::time::Duration::from_millis(ttl),
        max_bytes,
        max_entry_bytes,
    })
}

/// `authProvider`: a service asked before each request is proxied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthProvider {
    /// Where (an IP literal and port).
    pub addr: std::net::SocketAddr,
    /// The Host it is sent.
    pub host: String,
    /// Path and query asked.
    pub path: String,
    /// Longest wait for its answer (then 503).
    pub timeout: std::time::Duration,
    /// Request headers passed to it (lowercased).
    pub forward: Vec<String>,
    /// Its response headers copied onto the upstream request (lowercased);
    /// the client's own copies never reach the backend.
    pub copy: Vec<String>,
    /// How long a verdict is reused per worker (0 = never).
    pub cache: std::time::Duration,
}

/// `authProvider`, as written (an object; the seed's string form is refused).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAuthProvider {
    /// `http://IP:PORT/path`.
    pub url: Option<String>,
    /// Longest wait.
    pub timeout_ms: Option<u64>,
    /// Request headers passed on.
    pub forward_headers: Option<Vec<String>>,
    /// Response headers copied to the upstream request.
    pub copy_headers: Option<Vec<String>>,
    /// Verdict cache lifetime.
    pub cache_ms: Option<u64>,
}

const PROVIDER_EXAMPLE: &str = "{\"url\": \"http://127.0.0.1:9000/check\", \"timeoutMs\": 1000, \
     \"forwardHeaders\": [\"Authorization\", \"Cookie\"], \"copyHeaders\": [\"X-User\"], \"cacheMs\": 0}";

fn auth_provider_from(v: &Value, path: &str, errs: &mut Errs) -> Option<AuthProvider> {
    let field = join(path, "authProvider");
    if v.is_string() {
        errs.push(field, format!("the name form is not supported: give the provider as an object, {PROVIDER_EXAMPLE}"));
        return None;
    }
    let raw: RawAuthProvider = match serde_json::from_value(v.clone()) {
        Ok(r) => r,
        Err(e) => {
            errs.push(field, format!("{e}; expected {PROVIDER_EXAMPLE}"));
            return None;
        }
    };
    let before = errs.list.len();
    let url = raw.url.unwrap_or_default();
    let parsed = url.strip_prefix("http://").and_then(|rest| {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = authority.parse::<std::net::SocketAddr>().ok()?;
        Some((addr, authority.to_string(), if path.is_empty() { "/".to_string() } else { path.to_string() }))
    });
    let Some((addr, host, p)) = parsed else {
        errs.push(
            join(&field, "url"),
            format!("{url:?}: expected http://IP:PORT/path (an IP literal: no DNS on the request path)"),
        );
        return None;
    };
    if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        errs.push(join(&field, "url"), "the path must not contain spaces or control characters");
    }
    let names = |list: Option<Vec<String>>, f: &str, errs: &mut Errs| -> Vec<String> {
        let list = list.unwrap_or_default();
        for (i, n) in list.iter().enumerate() {
            if !is_token(n) {
                errs.push(join(&field, &format!("{f}[{i}]")), format!("{n:?} is not a header name"));
            }
        }
        list.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let timeout = match raw.timeout_ms {
        None => 1000,
        Some(t) if t == 0 || t > 60_000 => {
            errs.push(join(&field, "timeoutMs"), "must be between 1 and 60000");
            1000
        }
        Some(t) => t,
    };
    let provider = AuthProvider {
        addr,
        host,
        path: p,
        timeout: std::time::Duration::from_millis(timeout),
        forward: names(raw.forward_headers, "forwardHeaders", errs),
        copy: names(raw.copy_headers, "copyHeaders", errs),
        cache: std::time::Duration::from_millis(raw.cache_ms.unwrap_or(0).min(3_600_000)),
    };
    (errs.list.len() == before).then_some(provider)
}

impl Policies {
    /// These with `over`'s set policies on top (a path rule over its route).
    pub fn overlay(&self, over: &Policies) -> Policies {
        Policies {
            auth: over.auth.clone().or_else(|| self.auth.clone()),
            rate_limit: over.rate_limit.clone().or_else(|| self.rate_limit.clone()),
            cors: over.cors.clone().or_else(|| self.cors.clone()),
            circuit_breaker: over.circuit_breaker.clone().or_else(|| self.circuit_breaker.clone()),
            auth_provider: over.auth_provider.clone().or_else(|| self.auth_provider.clone()),
            cache: over.cache.clone().or_else(|| self.cache.clone()),
        }
    }

    /// Nothing for the request-path chain to do (auth `none` counts as
    /// nothing; circuit breaking runs in the pick, not the chain).
    pub fn is_empty(&self) -> bool {
        matches!(self.auth, None | Some(Auth::Off))
            && self.rate_limit.is_none()
            && self.cors.is_none()
            && self.auth_provider.is_none()
            && self.cache.is_none()
    }
}

/// Who may pass.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No auth (a path rule opting out of its route's).
    Off,
    /// HTTP Basic against hashed passwords.
    Basic {
        /// The realm in `WWW-Authenticate`.
        realm: String,
        /// (user, bcrypt or argon2id hash), sorted by user.
        users: Vec<(String, String)>,
    },
    /// Bearer tokens, known by their SHA-256.
    Bearer {
        /// Digests of the accepted tokens.
        tokens: Vec<[u8; 32]>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Off => f.write_str("Auth::Off"),
            Auth::Basic { realm, users } => f
                .debug_struct("Auth::Basic")
                .field("realm", realm)
                .field("users", &users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
                .finish(),
            Auth::Bearer { tokens } => f.debug_struct("Auth::Bearer").field("tokens", &tokens.len()).finish(),
        }
    }
}

/// A rate limit per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Bucket size.
    pub burst: u32,
    /// What a key is.
    pub key: RateKey,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address.
    ClientIp,
    /// A request header's value (lowercased name); requests without it
    /// share one key.
    Header(String),
}

/// CORS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Any origin (`*`).
    pub any_origin: bool,
    /// Allowed origins, lowercased.
    pub origins: Vec<String>,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Allowed request headers (lowercased).
    pub headers: Vec<String>,
    /// Exposed response headers.
    pub expose: Vec<String>,
    /// Preflight cache lifetime.
    pub max_age_s: u32,
    /// Credentials allowed.
    pub credentials: bool,
}

/// A field name as HTTP allows it.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `$2a$`/`$2b$`/`$2y$`, a cost of 04-31, then 53 characters of bcrypt's
/// base64 (22 of salt, 31 of hash): what `htpasswd -B` writes.
fn is_bcrypt(h: &str) -> bool {
    let b = h.as_bytes();
    let prefix_ok = h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$");
    let cost = h.get(4..6).and_then(|c| c.parse::<u32>().ok());
    prefix_ok
        && b.len() == 60
        && cost.is_some_and(|c| (4..=31).contains(&c))
        && b[6] == b'$'
        && b[7..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

/// `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH` (PHC string, base64 without
/// padding).
fn is_argon2id(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    let b64 = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/');
    let params_ok = parts.get(3).is_some_and(|p| {
        let kv: Vec<&str> = p.split(',').collect();
        kv.len() == 3
            && ["m=", "t=", "p="]
                .iter()
                .zip(&kv)
                .all(|(k, v)| v.strip_prefix(k).is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)))
    });
    parts.len() == 6
        && parts[0].is_empty()
        && parts[1] == "argon2id"
        && parts[2] == "v=19"
        && params_ok
        && b64(parts[4])
        && b64(parts[5])
}

fn auth_from(a: &RawAuth, path: &str, errs: &mut Errs) -> Option<Auth> {
    let field = |f: &str| join(path, f);
    let before = errs.list.len();
    let auth = match a.kind.as_deref() {
        Some("none") => Auth::Off,
        Some("basic") => {
            let realm = a.realm.clone().unwrap_or_else(|| "ringway".to_string());
            if realm.is_empty() || realm.len() > 128 || realm.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
                errs.push(field("realm"), "must be 1-128 printable characters without quotes or backslashes");
            }
            let mut users = Vec::new();
            match &a.users {
                None => {
                    errs.push(field("users"), "is required for Basic auth: {\"name\": \"<bcrypt or argon2id hash>\"}")
                }
                Some(u) if u.is_empty() => errs.push(field("users"), "must name at least one user"),
                Some(u) => {
                    for (name, hash) in u {
                        let f = field(&format!("users.{name}"));
                        if name.is_empty() || name.contains(':') || name.bytes().any(|b| b < 0x20 || b == 0x7f) {
                            errs.push(f, "a user name is 1 or more printable characters without ':'");
                        } else if !is_bcrypt(hash) && !is_argon2id(hash) {
                            errs.push(
                                f,
                                "must be a bcrypt hash ($2b$/$2y$, as `htpasswd -nbB user pass` writes) or an \
                                 argon2id hash ($argon2id$...): passwords are never stored in plain text",
                            );
                        } else {
                            users.push((name.clone(), hash.clone()));
                        }
                    }
                }
            }
            if a.tokens.is_some() {
                errs.push(field("tokens"), "only applies to \"type\": \"bearer\"");
            }
            Auth::Basic { realm, users }
        }
        Some("bearer") => {
            let mut tokens = Vec::new();
            match &a.tokens {
                None => errs.push(field("tokens"), "is required for Bearer auth: the SHA-256 of each token, in hex"),
                Some(t) if t.is_empty() => errs.push(field("tokens"), "must list at least one token digest"),
                Some(t) => {
                    for (i, hex) in t.iter().enumerate() {
                        match parse_sha256_hex(hex) {
                            Some(d) => tokens.push(d),
                            None => errs.push(
                                field(&format!("tokens[{i}]")),
                                "must be the SHA-256 of the token in hex, 64 characters (printf %s TOKEN | sha256sum)",
                            ),
                        }
                    }
                }
            }
            if a.users.is_some() || a.realm.is_some() {
                errs.push(field("users"), "users and realm only apply to \"type\": \"basic\"");
            }
            Auth::Bearer { tokens }
        }
        Some(other) => {
            errs.push(field("type"), format!("{other:?}: expected \"basic\", \"bearer\" or \"none\""));
            return None;
        }
        None => {
            errs.push(field("type"), "is required: \"basic\", \"bearer\" or \"none\"");
            return None;
        }
    };
    (errs.list.len() == before).then_some(auth)
}

fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn rate_limit_from(r: &RawRateLimit, path: &str, errs: &mut Errs) -> Option<RateLimit> {
    let before = errs.list.len();
    let per_second = match r.requests_per_second {
        None => {
            errs.push(join(path, "requestsPerSecond"), "is required");
            1
        }
        Some(n) if n == 0 || n > 1_000_000 => {
            errs.push(join(path, "requestsPerSecond"), "must be between 1 and 1000000");
            1
        }
        Some(n) => n as u32,
    };
    let burst = match r.burst {
        None => per_second,
        Some(b) if b == 0 || b > 10_000_000 => {
            errs.push(join(path, "burst"), "must be between 1 and 10000000 (a burst of 0 would refuse everything)");
            1
        }
        Some(b) => b as u32,
    };
    let key = match r.key.as_deref() {
        None | Some("clientIp") => RateKey::ClientIp,
        Some(k) => match k.strip_prefix("header:") {
            Some(h) if is_token(h) => RateKey::Header(h.to_ascii_lowercase()),
            _ => {
                errs.push(join(path, "key"), format!("{k:?}: expected \"clientIp\" or \"header:Name\""));
                RateKey::ClientIp
            }
        },
    };
    (errs.list.len() == before).then_some(RateLimit { per_second, burst, key })
}

fn cors_from(c: &RawCors, path: &str, errs: &mut Errs) -> Option<Cors> {
    let before = errs.list.len();
    let mut cors = Cors {
        any_origin: false,
        origins: Vec::new(),
        methods: c.allow_methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]),
        headers: c.allow_headers.iter().flatten().map(|h| h.to_ascii_lowercase()).collect(),
        expose: c.expose_headers.clone().unwrap_or_default(),
        max_age_s: 600,
        credentials: c.allow_credentials.unwrap_or(false),
    };
    match &c.allow_origins {
        None => errs.push(join(path, "allowOrigins"), "is required: [\"https://app.example.com\"] or [\"*\"]"),
        Some(list) if list.is_empty() => errs.push(join(path, "allowOrigins"), "must not be empty"),
        Some(list) => {
            for (i, o) in list.iter().enumerate() {
                if o == "*" {
                    cors.any_origin = true;
                    continue;
                }
                let ok = (o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.split_once("://").is_some_and(|(_, h)| !h.is_empty() && !h.contains('/'));
                if ok {
                    cors.origins.push(o.to_ascii_lowercase());
                } else {
                    errs.push(
                        join(path, &format!("allowOrigins[{i}]")),
                        format!("{o:?} is not scheme://host[:port] or *"),
                    );
                }
            }
        }
    }
    if cors.any_origin && cors.credentials {
        errs.push(
            join(path, "allowCredentials"),
            "credentials cannot be allowed for any origin (\"*\"): list the origins",
        );
    }
    for (i, m) in cors.methods.iter().enumerate() {
        if !is_token(m) {
            errs.push(join(path, &format!("allowMethods[{i}]")), format!("{m:?} is not a method"));
        }
    }
    for (i, h) in cors.headers.iter().chain(&cors.expose).enumerate() {
        if !is_token(h) {
            errs.push(join(path, "allowHeaders"), format!("entry {i}: {h:?} is not a header name"));
        }
    }
    match c.max_age_s {
        Some(s) if s > 86_400 => errs.push(join(path, "maxAgeS"), "must be at most 86400"),
        Some(s) => cors.max_age_s = s as u32,
        None => {}
    }
    (errs.list.len() == before).then_some(cors)
}

fn breaker_from(c: &RawCircuitBreaker, path: &str, errs: &mut Errs) -> Option<CircuitBreaker> {
    let before = errs.list.len();
    let n = |v: Option<u64>, d: u64, min: u64, max: u64, f: &str, errs: &mut Errs| match v {
        None => d,
        Some(x) if x < min || x > max => {
            errs.push(join(path, f), format!("must be between {min} and {max}"));
            d
        }
        Some(x) => x,
    };
    let ms = std::time::Duration::from_millis;
    let cb = CircuitBreaker {
        consecutive_failures: n(c.consecutive_failures, 5, 1, 10_000, "consecutiveFailures", errs) as u32,
        error_rate_percent: n(c.error_rate_percent, 50, 0, 100, "errorRatePercent", errs) as u8,
        min_requests: n(c.min_requests, 20, 1, 1_000_000, "minRequests", errs) as u32,
        window: ms(n(c.window_ms, 10_000, 100, 3_600_000, "windowMs", errs)),
        open: ms(n(c.open_ms, 5_000, 10, 3_600_000, "openMs", errs)),
        half_open_requests: n(c.half_open_requests, 1, 1, 1_000, "halfOpenRequests", errs) as u32,
        count_5xx: c.count_status5xx.unwrap_or(false),
    };
    (errs.list.len() == before).then_some(cb)
}

/// The raw policy fields of a route or path rule.
pub(crate) struct RawPolicies<'a> {
    pub(crate) auth: Option<&'a RawAuth>,
    pub(crate) rate_limit: Option<&'a RawRateLimit>,
    pub(crate) cors: Option<&'a RawCors>,
    pub(crate) circuit_breaker: Option<&'a RawCircuitBreaker>,
    pub(crate) auth_provider: Option<&'a Value>,
    pub(crate) cache: Option<&'a RawCache>,
}

/// Validates the policy fields of a route or path rule at `path`.
pub(crate) fn policies_from(raw: RawPolicies<'_>, path: &str, errs: &mut Errs) -> Policies {
    Policies {
        auth: raw.auth.and_then(|a| auth_from(a, &join(path, "auth"), errs)),
        rate_limit: raw.rate_limit.and_then(|r| rate_limit_from(r, &join(path, "rateLimit"), errs)),
        cors: raw.cors.and_then(|c| cors_from(c, &join(path, "cors"), errs)),
        circuit_breaker: raw.circuit_breaker.and_then(|c| breaker_from(c, &join(path, "circuitBreaker"), errs)),
        auth_provider: raw.auth_provider.filter(|v| !v.is_null()).and_then(|v| auth_provider_from(v, path, errs)),
        cache: raw.cache.and_then(|c| cache_from(c, &join(path, "cache"), errs)),
    }
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds the set policies to a route's or rule's JSON; `public` hides
/// password hashes and token digests.
pub fn policies_json(p: &Policies, out: &mut Map<String, Value>, public: bool) {
    let secret = |s: String| if public { Value::String("<redacted>".into()) } else { Value::String(s) };
    if let Some(a) = &p.auth {
        let v = match a {
            Auth::Off => json!({"type": "none"}),
            Auth::Basic { realm, users } => {
                let users: Map<String, Value> = users.iter().map(|(u, h)| (u.clone(), secret(h.clone()))).collect();
                json!({"type": "basic", "realm": realm, "users": users})
            }
            Auth::Bearer { tokens } => {
                json!({"type": "bearer", "tokens": tokens.iter().map(|t| secret(hex(t))).collect::<Vec<_>>()})
            }
        };
        out.insert("auth".into(), v);
    }
    if let Some(r) = &p.rate_limit {
        let key = match &r.key {
            RateKey::ClientIp => "clientIp".to_string(),
            RateKey::Header(h) => format!("header:{h}"),
        };
        out.insert("rateLimit".into(), json!({"requestsPerSecond": r.per_second, "burst": r.burst, "key": key}));
    }
    if let Some(c) = &p.cache {
        out.insert(
            "cache".into(),
            json!({"ttlMs": c.ttl.as_millis() as u64, "maxBytes": c.max_bytes, "maxEntryBytes": c.max_entry_bytes}),
        );
    }
    if let Some(a) = &p.auth_provider {
        out.insert(
            "authProvider".into(),
            json!({"url": format!("http://{}{}", a.host, a.path), "timeoutMs": a.timeout.as_millis() as u64,
                   "forwardHeaders": a.forward, "copyHeaders": a.copy, "cacheMs": a.cache.as_millis() as u64}),
        );
    }
    if let Some(b) = &p.circuit_breaker {
        out.insert(
            "circuitBreaker".into(),
            json!({"consecutiveFailures": b.consecutive_failures, "errorRatePercent": b.error_rate_percent,
                   "minRequests": b.min_requests, "windowMs": b.window.as_millis() as u64,
                   "openMs": b.open.as_millis() as u64, "halfOpenRequests": b.half_open_requests,
                   "countStatus5xx": b.count_5xx}),
        );
    }
    if let Some(c) = &p.cors {
        let origins: Vec<String> = if c.any_origin { vec!["*".into()] } else { c.origins.clone() };
        out.insert(
            "cors".into(),
            json!({"allowOrigins": origins, "allowMethods": c.methods, "allowHeaders": c.headers,
                   "exposeHeaders": c.expose, "maxAgeS": c.max_age_s, "allowCredentials": c.credentials}),
        );
    }
}

/// `p` behind an `Arc`; routes without policies share one.
pub fn shared(p: Policies) -> std::sync::Arc<Policies> {
    static NONE: std::sync::OnceLock<std::sync::Arc<Policies>> = std::sync::OnceLock::new();
    if p == Policies::default() {
        NONE.get_or_init(Default::default).clone()
    } else {
        std::sync::Arc::new(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_formats() {
        assert!(is_bcrypt("$2y$05$TPn2jk2bPjaZ6H3bRt3/Dezg5LqDtvvMyf3fpiZqFJTIcS0kzjj6C"));
        assert!(!is_bcrypt("$2y$05$short"));
        assert!(!is_bcrypt("hunter2"));
        assert!(is_argon2id("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"));
        assert!(!is_argon2id("$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"));
        assert_eq!(parse_sha256_hex(&"ab".repeat(32)).map(|d| d[0]), Some(0xab));
        assert!(parse_sha256_hex("xyz").is_none());
    }
}
