//! The REST API as a transport-free handler: a request in, a response (or a
//! change to commit) out. The control thread's listener feeds it and, for a
//! `Commit`, persists the next state, broadcasts it and waits for the acks
//! before it sends the reply. Live views (`/stats`, `/health`, `/metrics`)
//! are answered by the control thread from its own data.

use serde_json::{json, Value};

use crate::model::{validate_backend, validate_route, ConfigErrors, RouteDefaults, VHost};
use crate::raw::{RawBackend, RawRoute};
use crate::state::{all_backends, route_json_public as route_json, ApiError, Change, State};

/// Largest request body the API reads.
pub const MAX_BODY: usize = 1 << 20;

/// One API request, as the transport parsed it.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: &'a str,
    /// Body bytes.
    pub body: &'a [u8],
    /// Content-Type header value.
    pub content_type: Option<&'a str>,
    /// If-Match header value.
    pub if_match: Option<&'a str>,
}

/// A response: status, JSON body (none for 204), and the ETag generation.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body; `Value::Null` with 204.
    pub body: Value,
    /// Generation to send as a quoted ETag.
    pub etag: Option<u64>,
    /// With 405: the methods the path takes (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl ApiResponse {
    /// A JSON response.
    pub fn json(status: u16, body: Value) -> ApiResponse {
        ApiResponse { status, body, etag: None, allow: None }
    }

    /// An error response.
    pub fn error(e: &ApiError) -> ApiResponse {
        ApiResponse::json(e.status, e.to_json())
    }
}

/// What the handler decided.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // control-plane values, one per API call
pub enum Outcome {
    /// Answer now; nothing changes.
    Reply(ApiResponse),
    /// A dry run: answer `reply` (the would-be result); `next` is the state
    /// the change would make (for an impact report), and nothing changes.
    DryRun {
        /// The state the change would make.
        next: Box<State>,
        /// The answer.
        reply: ApiResponse,
    },
    /// Commit `next` (produced by `change`), then answer `reply`.
    Commit {
        /// The change, for logs and replay.
        change: Change,
        /// The state after the change.
        next: Box<State>,
        /// The answer once every worker has it.
        reply: ApiResponse,
    },
}

/// What a certificate check learns: expiry, names, issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertMeta {
    /// Expiry, seconds since the Unix epoch.
    pub not_after: i64,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// The leaf's DNS names (subjectAltName).
    pub sans: Vec<String>,
    /// The leaf's issuer, as a distinguished name.
    pub issuer: String,
}

impl CertMeta {
    /// The certificate this check was of, to store.
    pub fn into_certificate(self, cert_pem: String, key_pem: String, acme: bool) -> crate::state::Certificate {
        crate::state::Certificate {
            cert_pem,
            key_pem,
            not_after: self.not_after,
            sans: self.sans,
            issuer: self.issuer,
            not_before: self.not_before,
            acme,
        }
    }
}

/// Checks a certificate (parses, chain in order, key matches, valid now):
/// what it learned, or what is wrong and with which field.
pub type CertCheck<'a> = &'a dyn Fn(&str, &str) -> Result<CertMeta, (&'static str, String)>;

/// What the handler needs besides the state.
pub struct ApiContext<'a> {
    /// What routes inherit.
    pub defaults: &'a RouteDefaults,
    /// The static part of the config (listeners, limits…), secrets redacted.
    pub static_config: &'a Value,
    /// The certificate check (crypto lives outside this crate).
    pub check_certificate: CertCheck<'a>,
    /// Certificates from the config file (listed with the API's; their
    /// names count for `autoHttps`): domain, SANs, notAfter, issuer, default.
    pub static_certificates: &'a [(CertMeta, bool)],
    /// ACME's view, by domain (state, last error, next attempt), when ACME
    /// is configured: merged into the certificates list.
    pub acme: Option<&'a serde_json::Map<String, Value>>,
}

/// `POST /certificates` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    domain: String,
    key: String,
    cert: String,
}

fn certificates_json(state: &State, ctx: &ApiContext<'_>) -> Value {
    let status = |d: &str| ctx.acme.and_then(|m| m.get(d)).cloned();
    let api = state.certificates.iter().map(|(d, c)| {
        let mut v = json!({"domain": d, "sans": c.sans, "notAfter": c.not_after, "issuer": c.issuer, "default": false,
                           "source": if c.acme { "acme" } else { "api" }});
        if let (true, Some(s)) = (c.acme, status(d)) {
            v["acme"] = s;
        }
        v
    });
    let config = ctx.static_certificates.iter().map(|(m, default)| {
        json!({"domain": m.sans.first(), "sans": m.sans, "notAfter": m.not_after, "issuer": m.issuer,
               "default": default, "source": "config"})
    });
    // Domains ACME is still working on (no certificate yet).
    let waiting = ctx.acme.into_iter().flatten().filter(|(d, _)| !state.certificates.contains_key(*d)).map(|(d, s)| {
        json!({"domain": d, "sans": [d], "notAfter": null, "issuer": null, "default": false, "source": "acme",
               "acme": s})
    });
    Value::Array(api.chain(config).chain(waiting).collect())
}

/// Whether some certificate serves `host`: the route's own, one stored
/// through the API, or one from the config file.
fn certificate_covers(state: &State, ctx: &ApiContext<'_>, host: &str) -> bool {
    let api = state
        .certificates
        .iter()
        .any(|(d, c)| crate::model::name_covers(d, host) || c.sans.iter().any(|n| crate::model::name_covers(n, host)));
    api || ctx.static_certificates.iter().any(|(m, _)| m.sans.iter().any(|n| crate::model::name_covers(n, host)))
}

/// Checks what only the data plane can (a route's own certificate) and
/// what spans routes and certificates (`autoHttps` needs one that serves
/// the vHost); errors name the field.
fn check_route_tls(route: &crate::model::Route, state: &State, ctx: &ApiContext<'_>) -> Result<(), ApiError> {
    if let Some(ssl) = &route.ssl {
        if let Err((field, message)) = (ctx.check_certificate)(&ssl.cert, &ssl.key) {
            return Err(ApiError::new(400, "invalidField", Some(format!("ssl.{field}")), message));
        }
    }
    let acme_issues = ctx.defaults.acme && route.vhost.acme_can_issue();
    if route.auto_https && route.ssl.is_none() && !acme_issues && !certificate_covers(state, ctx, &route.key) {
        return Err(ApiError::new(
            400,
            "invalidField",
            Some("autoHttps".into()),
            format!(
                "no certificate serves {:?} (add one or set ssl; acme issues only for an exact host name)",
                route.key
            ),
        ));
    }
    Ok(())
}

fn err(status: u16, error: &'static str, field: Option<String>, message: impl Into<String>) -> Outcome {
    Outcome::Reply(ApiResponse::error(&ApiError::new(status, error, field, message)))
}

/// Whether an `If-Match` is a condition at all: `*` and an empty list
/// (taken as no condition) are not; a list of entity tags is.
pub fn names_etags(if_match: Option<&str>) -> bool {
    if_match.is_some_and(|t| !matches!(t.trim(), "" | "*"))
}

/// `If-Match`, weighed: 400 when it is not `*` or a list of entity tags,
/// 412 when no tag names the current generation.
fn precondition(state: &State, if_match: Option<&str>) -> Option<Outcome> {
    if !names_etags(if_match) {
        return None;
    }
    let tag = if_match?.trim();
    let tags: Vec<&str> = tag.split(',').map(|t| t.trim().trim_start_matches("W/")).collect();
    let well_formed =
        |t: &&str| t.len() >= 2 && t.starts_with('"') && t.ends_with('"') && !t[1..t.len() - 1].contains('"');
    if !tags.iter().all(well_formed) {
        let message = format!("If-Match {tag:?} is not * or a list of entity tags like \"{}\"", state.generation);
        return Some(err(400, "invalidField", Some("If-Match".into()), message));
    }
    let current = format!("\"{}\"", state.generation);
    if tags.contains(&current.as_str()) {
        return None;
    }
    Some(err(412, "preconditionFailed", None, format!("If-Match {tag} is stale; the current ETag is {current}")))
}

/// 405 naming the methods `path` takes, in the body and in `Allow`.
fn not_allowed(allow: &'static str) -> Outcome {
    let mut r = ApiResponse::error(&ApiError::new(405, "methodNotAllowed", None, format!("use {allow}")));
    r.allow = Some(allow);
    Outcome::Reply(r)
}

fn first_field_error(e: &ConfigErrors) -> ApiError {
    let f = e.0.first();
    ApiError::new(
        400,
        "invalidField",
        f.map(|f| f.field.clone()).filter(|f| !f.is_empty()),
        f.map_or_else(|| "invalid".to_string(), |f| f.message.clone()),
    )
}

/// Decodes `%XX` escapes (of a path segment or a query value); `None` when one is malformed or the result is
/// not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn route_key(segment: &str) -> Option<String> {
    VHost::parse(&percent_decode(segment)?).map(|v| v.key())
}

/// A boolean query flag: absent → false; bare, `true` or `1` → true;
/// `false` or `0` → false; anything else is a 400 naming it (never a guess:
/// `?dryRun=yes` must not commit).
fn query_flag(query: &str, name: &str) -> Result<bool, ApiError> {
    let mut flag = false;
    for kv in query.split('&') {
        // A bare `?dryRun` means true; `?dryRun=` (empty) is no value.
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        if k != name {
            continue;
        }
        flag = match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalidField",
                    Some(name.into()),
                    format!("{name} must be true or false"),
                ))
            }
        };
    }
    Ok(flag)
}

/// A write's `wait`: `cluster` (answer once every node of a cluster
/// applied it) or `local` (the default: once this node did).
pub fn wait_cluster(query: &str) -> Result<bool, ApiError> {
    let mut wait = false;
    for kv in query.split('&') {
        if let Some(v) = kv.strip_prefix("wait=") {
            wait = match v {
                "cluster" => true,
                "local" => false,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "invalidField",
                        Some("wait".into()),
                        "wait must be cluster or local",
                    ))
                }
            };
        }
    }
    Ok(wait)
}

#[allow(clippy::result_large_err)] // the error is the reply itself
fn parse_body<T: serde::de::DeserializeOwned>(req: &ApiRequest<'_>) -> Result<T, Outcome> {
    if req.body.len() > MAX_BODY {
        return Err(err(413, "bodyTooLarge", None, "the body is over 1 MiB"));
    }
    let json = req.content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    });
    if !json {
        return Err(err(415, "unsupportedMediaType", None, "send Content-Type: application/json"));
    }
    let text = std::str::from_utf8(req.body).map_err(|_| err(400, "invalidJson", None, "the body is not UTF-8"))?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (code, field) = match inner.classify() {
            serde_json::error::Category::Data => ("invalidField", Some(path).filter(|p| p != "." && !p.is_empty())),
            _ => ("invalidJson", None),
        };
        Outcome::Reply(ApiResponse::error(&ApiError::new(400, code, field, inner.to_string())))
    })
}

/// The admin API's OpenAPI 3.1 description (`GET /api/v1/openapi.json`);
/// tests/openapi.rs keeps it true with schemathesis.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Handles one request against the current state.
pub fn handle(state: &State, ctx: &ApiContext<'_>, req: &ApiRequest<'_>) -> Outcome {
    let mut outcome = route_request(state, ctx, req);
    // Every read of the state carries its ETag (for a later If-Match).
    if let Outcome::Reply(r) = &mut outcome {
        if req.method == "GET" && r.status == 200 && r.etag.is_none() {
            r.etag = Some(state.generation);
        }
    }
    outcome
}

fn route_request(state: &State, ctx: &ApiContext<'_>, req: &ApiRequest<'_>) -> Outcome {
    let Some(rest) = req.path.strip_prefix("/api/v1") else {
        return err(404, "notFound", None, format!("no such path {:?}", req.path));
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method;

    // If-Match is weighed last, as RFC 9110 (13.2.1) says: a request that
    // would fail anyway (a bad body, an unknown route) gets that error.
    let commit = |change: Change, reply: ApiResponse| -> Outcome {
        let dry_run = match query_flag(req.query, "dryRun") {
            Ok(d) => d,
            Err(e) => return Outcome::Reply(ApiResponse::error(&e)),
        };
        if let Err(e) = wait_cluster(req.query) {
            return Outcome::Reply(ApiResponse::error(&e));
        }
        let mut next = state.clone();
        if let Err(e) = next.apply(&change) {
            return Outcome::Reply(ApiResponse::error(&e));
        }
        if let Some(stale) = precondition(state, req.if_match) {
            return stale;
        }
        let mut r = reply;
        if dry_run {
            r.status = 200;
            r.body = json!({"dryRun": true, "result": r.body, "generation": next.generation});
            Outcome::DryRun { next: Box::new(next), reply: r }
        } else {
            r.etag = Some(next.generation);
            Outcome::Commit { change, next: Box::new(next), reply: r }
        }
    };
    match (method, segs.as_slice()) {
        ("GET", ["routes"]) => {
            Outcome::Reply(ApiResponse::json(200, Value::Array(state.routes.iter().map(|r| route_json(r)).collect())))
        }
        ("POST", ["routes"]) => {
            let raw: RawRoute = match parse_body(req) {
                Ok(r) => r,
                Err(o) => return o,
            };
            match validate_route(&raw, ctx.defaults) {
                Err(e) => Outcome::Reply(ApiResponse::error(&first_field_error(&e))),
                Ok(route) => match check_route_tls(&route, state, ctx) {
                    Err(e) => Outcome::Reply(ApiResponse::error(&e)),
                    Ok(()) => {
                        let body = route_json(&route);
                        commit(Change::PutRoute { route, create: true }, ApiResponse::json(201, body))
                    }
                },
            }
        }
        ("GET", ["routes", v]) => match route_key(v).and_then(|k| state.route(&k)) {
            Some(r) => Outcome::Reply(ApiResponse::json(200, route_json(r))),
            None => err(404, "notFound", None, format!("no route {v:?}")),
        },
        ("PUT", ["routes", v]) => {
            let Some(key) = route_key(v).filter(|k| state.route(k).is_some()) else {
                return err(404, "notFound", None, format!("no route {v:?}"));
            };
            let mut raw: RawRoute = match parse_body(req) {
                Ok(r) => r,
                Err(o) => return o,
            };
            match raw.v_host.as_deref().map(|h| VHost::parse(h).map(|x| x.key())) {
                None => raw.v_host = Some(key.clone()),
                Some(Some(k)) if k == key => {}
                Some(_) => return err(400, "invalidField", Some("vHost".into()), "vHost must match the path"),
            }
            // A route read back through the API shows its key redacted:
            // putting it back unchanged keeps the stored key.
            if let (Some(ssl), Some(old)) = (raw.ssl.as_mut(), state.route(&key).and_then(|r| r.ssl.as_ref())) {
                if ssl.key.as_deref() == Some("<redacted>") {
                    ssl.key = Some(old.key.clone());
                }
            }
            match validate_route(&raw, ctx.defaults) {
                Err(e) => Outcome::Reply(ApiResponse::error(&first_field_error(&e))),
                Ok(route) => match check_route_tls(&route, state, ctx) {
                    Err(e) => Outcome::Reply(ApiResponse::error(&e)),
                    Ok(()) => {
                        let body = route_json(&route);
                        commit(Change::PutRoute { route, create: false }, ApiResponse::json(200, body))
                    }
                },
            }
        }
        ("DELETE", ["routes", v]) => match route_key(v) {
            Some(key) => commit(Change::DeleteRoute { key }, ApiResponse::json(204, Value::Null)),
            None => err(404, "notFound", None, format!("no route {v:?}")),
        },
        ("POST", ["routes", v, "backends"]) => {
            let Some(route) = route_key(v).and_then(|k| state.route(&k)) else {
                return err(404, "notFound", None, format!("no route {v:?}"));
            };
            let raw: RawBackend = match parse_body(req) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let explicit = raw.id.is_some();
            let mut backend = match validate_backend(&raw) {
                Ok(b) => b,
                Err(e) => return Outcome::Reply(ApiResponse::error(&first_field_error(&e))),
            };
            if !explicit {
                let base = backend.id.clone();
                let mut n = 1;
                while all_backends(route).any(|b| b.id == backend.id) {
                    n += 1;
                    backend.id = format!("{base}-{n}");
                }
            }
            let body =
                json!({"id": backend.id, "hostname": backend.hostname, "port": backend.port, "weight": backend.weight});
            commit(Change::AddBackend { key: route.key.clone(), backend }, ApiResponse::json(201, body))
        }
        ("DELETE", ["routes", v, "backends", id]) => match (route_key(v), percent_decode(id)) {
            (Some(key), Some(id)) => commit(Change::DeleteBackend { key, id }, ApiResponse::json(204, Value::Null)),
            _ => err(404, "notFound", None, "no such backend"),
        },
        (m @ ("POST" | "DELETE"), ["routes", v, "backends", id, "dead"]) => match (route_key(v), percent_decode(id)) {
            (Some(key), Some(id)) => {
                let dead = m == "POST";
                let body = json!({"vHost": key, "id": id, "maintenance": dead});
                commit(Change::Maintenance { key, id, dead }, ApiResponse::json(200, body))
            }
            _ => err(404, "notFound", None, "no such backend"),
        },
        ("GET", ["certificates"]) => Outcome::Reply(ApiResponse::json(200, certificates_json(state, ctx))),
        ("POST", ["certificates"]) => {
            let raw: RawCertificate = match parse_body(req) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let domain = raw.domain.trim_end_matches('.').to_ascii_lowercase();
            let valid_domain = match domain.strip_prefix("*.") {
                Some(rest) => crate::model::valid_dns_name(rest),
                None => crate::model::valid_dns_name(&domain),
            };
            if !valid_domain {
                return err(
                    400,
                    "invalidField",
                    Some("domain".into()),
                    format!("{:?} is not a domain name", raw.domain),
                );
            }
            match (ctx.check_certificate)(&raw.cert, &raw.key) {
                Err((field, message)) => err(400, "invalidField", Some(field.into()), message),
                Ok(meta) => {
                    let body = json!({"domain": domain, "sans": meta.sans, "notAfter": meta.not_after,
                                      "issuer": meta.issuer});
                    let certificate = meta.into_certificate(raw.cert, raw.key, false);
                    commit(Change::PutCertificate { domain, certificate }, ApiResponse::json(201, body))
                }
            }
        }
        ("DELETE", ["certificates", d]) => match percent_decode(d) {
            Some(d) => {
                let domain = d.trim_end_matches('.').to_ascii_lowercase();
                // An autoHttps route must keep a certificate: refuse to take its last one away.
                let mut after = state.clone();
                after.certificates.remove(&domain);
                // (With ACME, a new one is issued instead.)
                let orphan = state.routes.iter().find(|r| {
                    !(ctx.defaults.acme && r.vhost.acme_can_issue())
                        && r.auto_https
                        && r.ssl.is_none()
                        && certificate_covers(state, ctx, &r.key)
                        && !certificate_covers(&after, ctx, &r.key)
                });
                match orphan {
                    Some(r) => err(
                        409,
                        "conflict",
                        Some("domain".into()),
                        format!("route {:?} has autoHttps and no other certificate serves it", r.key),
                    ),
                    None => commit(Change::DeleteCertificate { domain }, ApiResponse::json(204, Value::Null)),
                }
            }
            None => err(404, "notFound", None, "no such certificate"),
        },
        (_, ["certificates"]) => not_allowed("GET, POST"),
        (_, ["certificates", _]) => not_allowed("DELETE"),
        ("GET", ["openapi.json"]) => match serde_json::from_str(OPENAPI) {
            Ok(doc) => Outcome::Reply(ApiResponse::json(200, doc)),
            Err(e) => err(500, "internal", None, format!("the embedded OpenAPI document: {e}")),
        },
        ("GET", ["config"]) => {
            let mut cfg = ctx.static_config.clone();
            if let Value::Object(m) = &mut cfg {
                m.insert("generation".into(), json!(state.generation));
                m.insert("routes".into(), Value::Array(state.routes.iter().map(|r| route_json(r)).collect()));
                m.insert("certificates".into(), certificates_json(state, ctx));
                m.insert(
                    "maintenance".into(),
                    Value::Array(
                        state.maintenance.iter().map(|(k, id)| crate::state::maintenance_json(k, id)).collect(),
                    ),
                );
            }
            Outcome::Reply(ApiResponse { status: 200, body: cfg, etag: Some(state.generation), allow: None })
        }
        (_, ["routes"]) => not_allowed("GET, POST"),
        (_, ["routes", _]) => not_allowed("GET, PUT, DELETE"),
        (_, ["routes", _, "backends"]) => not_allowed("POST"),
        (_, ["routes", _, "backends", _]) => not_allowed("DELETE"),
        (_, ["routes", _, "backends", _, "dead"]) => not_allowed("POST, DELETE"),
        (_, ["config"] | ["openapi.json"]) => not_allowed("GET"),
        _ => err(404, "notFound", None, format!("no such path {:?}", req.path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_config;

    fn call(state: &State, method: &str, path: &str, body: &str) -> Outcome {
        call_if(state, method, path, body, None)
    }

    /// `call` with an `If-Match` header.
    fn call_if(state: &State, method: &str, path: &str, body: &str, if_match: Option<&str>) -> Outcome {
        let defaults = RouteDefaults::of(&parse_config("{}").expect("valid"));
        let sc = json!({});
        let no_certs = |_: &str, _: &str| -> Result<CertMeta, (&'static str, String)> { Err(("cert", "no".into())) };
        let ctx = ApiContext {
            defaults: &defaults,
            static_config: &sc,
            check_certificate: &no_certs,
            static_certificates: &[],
            acme: None,
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        handle(
            state,
            &ctx,
            &ApiRequest {
                method,
                path,
                query,
                body: body.as_bytes(),
                content_type: Some("application/json"),
                if_match,
            },
        )
    }

    fn status(o: &Outcome) -> u16 {
        match o {
            Outcome::Reply(r) | Outcome::DryRun { reply: r, .. } => r.status,
            Outcome::Commit { reply, .. } => reply.status,
        }
    }

    #[test]
    fn create_then_conflict() {
        let body = r#"{"vHost":"a.com","backends":[{"hostname":"127.0.0.1","port":8080}]}"#;
        let s = State::default();
        let Outcome::Commit { next, reply, .. } = call(&s, "POST", "/api/v1/routes", body) else {
            panic!("expected a commit")
        };
        assert_eq!(reply.status, 201);
        assert_eq!(status(&call(&next, "POST", "/api/v1/routes", body)), 409);
        assert_eq!(status(&call(&next, "GET", "/api/v1/routes/A.com", "")), 200);
        assert_eq!(status(&call(&next, "GET", "/api/v1/routes/b.com", "")), 404);
        assert_eq!(status(&call(&next, "PATCH", "/api/v1/routes/a.com", "")), 405);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let s = State::default();
        let o = call(
            &s,
            "POST",
            "/api/v1/routes",
            r#"{"vHost":"a.com","backends":[{"hostname":"h","port":1},{"hostname":"h","port":70000}]}"#,
        );
        let Outcome::Reply(r) = o else { panic!("no commit expected") };
        assert_eq!((r.status, r.body["field"].as_str()), (400, Some("backends[1].port")));
        let Outcome::Reply(r) = call(&s, "POST", "/api/v1/routes", "{") else { panic!() };
        assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalidJson")));
        let Outcome::Reply(r) = call(&s, "POST", "/api/v1/routes", r#"{"vHost":"a","strategy":"X"}"#) else { panic!() };
        assert_eq!(r.body["field"].as_str(), Some("strategy"));
    }

    #[test]
    fn flags_and_preconditions_are_parsed_strictly() {
        assert_eq!(query_flag("", "dryRun").ok(), Some(false));
        assert_eq!(query_flag("dryRun", "dryRun").ok(), Some(true));
        assert_eq!(query_flag("a=1&dryRun=TRUE", "dryRun").ok(), Some(true));
        assert_eq!(query_flag("dryRun=0", "dryRun").ok(), Some(false));
        assert!(query_flag("dryRun=yes", "dryRun").is_err(), "never a guess");
        assert!(query_flag("dryRun=", "dryRun").is_err());
        assert_eq!(wait_cluster("").ok(), Some(false));
        assert_eq!(wait_cluster("dryRun=1&wait=cluster").ok(), Some(true));
        assert_eq!(wait_cluster("wait=local").ok(), Some(false));
        assert!(wait_cluster("wait=all").is_err(), "never a guess");
        assert!(wait_cluster("wait=").is_err());
        let s = State::default();
        let body = r#"{"vHost":"a.com"}"#;
        let with = |tag: &str| status(&call_if(&s, "POST", "/api/v1/routes", body, Some(tag)));
        assert_eq!(with("\"0\""), 201);
        assert_eq!(with("W/\"7\", \"0\""), 201);
        assert_eq!(with("*"), 201);
        assert_eq!(with(""), 201, "an empty list is no condition");
        assert_eq!(with("\"7\""), 412);
        assert_eq!(with("7"), 400, "not an entity tag");
    }

    #[test]
    fn dry_run_commits_nothing() {
        let body = r#"{"vHost":"a.com"}"#;
        let o = call(&State::default(), "POST", "/api/v1/routes?dryRun=true", body);
        let Outcome::DryRun { reply: r, next } = o else { panic!("dry run must not commit") };
        assert_eq!(next.routes.len(), 1, "the would-be state");
        assert_eq!((r.status, r.body["dryRun"].as_bool()), (200, Some(true)));
    }
}
