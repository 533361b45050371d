//! The admin REST API, end to end: real HTTP to the admin listener, real
//! proxied traffic through ringway, the state file and SIGHUP.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::*;

/// Who served `r` (its x-backend header).
fn served_by(r: &Response) -> String {
    r.header("x-backend").unwrap_or("-").to_string()
}

/// One proxied GET on a fresh connection; must be 200; returns who served it.
fn served(rw: &Ringway, host: &str, path: &str) -> String {
    let r = get(rw.addr(), host, path);
    assert_eq!(r.status, 200, "GET {path} Host {host}:\n{}{}", r.head, r.text());
    served_by(&r)
}

/// A backend entry without an id (the API assigns one).
fn anon(b: &BackendHandle) -> Value {
    json!({"hostname": "127.0.0.1", "port": b.port()})
}

/// A route in the seed's RouteConfig shape, without ids.
fn seed_route(vhost: &str, backends: Vec<Value>) -> Value {
    json!({
        "vHost": vhost,
        "strategy": "ROUND_ROBIN",
        "autoHttps": false,
        "reqActiveLength": 50,
        "reqQueueLength": 100,
        "authProvider": null,
        "headers": {"X-Env": "test"},
        "backends": backends,
        "ssl": null,
        "paths": [],
    })
}

fn admin_config(routes: Vec<Value>) -> Value {
    with_admin(config(routes), None)
}

// ---------------------------------------------------------------------------
// 1. CRUD
// ---------------------------------------------------------------------------

#[test]
fn routes_crud_and_traffic_follows() {
    let seed = Backend::respond(200, "seed").named("seed").start();
    let new = Backend::echo().named("new").start();
    let moved = Backend::respond(200, "moved").named("moved").start();
    let rw = Ringway::start(admin_config(vec![route("seed.example", "ROUND_ROBIN", vec![seed.config()])]));
    let api = rw.api();

    let routes = api.routes();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["vHost"], "seed.example");
    assert_eq!(get(rw.addr(), "new.example", "/").status, 404, "no route yet, no catch-all");

    // Create.
    let body = seed_route("new.example", vec![anon(&new)]);
    let r = api.post("/api/v1/routes", &body).expect(201, "POST a new route");
    assert_eq!(r.json["vHost"], "new.example", "{}", r.json);
    assert!(r.json["id"].as_str().is_some_and(|s| !s.is_empty()), "route id not assigned: {}", r.json);
    let backends = r.json["backends"].as_array().unwrap_or_else(|| panic!("no backends in {}", r.json));
    assert_eq!(backends.len(), 1, "{}", r.json);
    assert!(backends[0]["id"].as_str().is_some_and(|s| !s.is_empty()), "backend id not assigned: {}", r.json);
    assert_eq!(backends[0]["port"], new.port(), "{}", r.json);
    // The very next request with that Host reaches it.
    assert_eq!(served(&rw, "new.example", "/first"), "new");
    assert_eq!(new.proxied_count(), 1);

    // Same vHost again.
    let r = api.post("/api/v1/routes", &body).expect(409, "POST the same vHost again");
    assert_eq!(r.error(), Some("conflict"), "{}", r.json);

    // Read one.
    let r = api.get("/api/v1/routes/new.example").expect(200, "GET the new route");
    assert_eq!(r.json["vHost"], "new.example");
    assert_eq!(r.json["backends"][0]["port"], new.port());
    let r = api.get("/api/v1/routes/unknown.example").expect(404, "GET an unknown route");
    assert_eq!(r.error(), Some("notFound"), "{}", r.json);

    // Replace: traffic follows at once.
    let r = api.put("/api/v1/routes/new.example", &seed_route("new.example", vec![moved.config()]));
    let r = r.expect(200, "PUT the route");
    assert_eq!(r.json["backends"][0]["port"], moved.port(), "{}", r.json);
    for i in 0..4 {
        assert_eq!(served(&rw, "new.example", &format!("/moved-{i}")), "moved", "request {i} after PUT");
    }
    assert_eq!(new.proxied_count(), 1, "the old backend got traffic after PUT");
    let r = api.put("/api/v1/routes/unknown.example", &seed_route("unknown.example", vec![anon(&new)]));
    assert_eq!(r.expect(404, "PUT an unknown route").error(), Some("notFound"));

    // Delete.
    let r = api.delete("/api/v1/routes/new.example").expect(204, "DELETE the route");
    assert!(r.response.body.is_empty(), "204 with a body: {:?}", r.response.text());
    for i in 0..3 {
        let r = get(rw.addr(), "new.example", &format!("/gone-{i}"));
        assert_eq!(r.status, 404, "request {i} after DELETE:\n{}", r.head);
    }
    assert_eq!(api.delete("/api/v1/routes/new.example").expect(404, "DELETE again").error(), Some("notFound"));
    assert_eq!(api.vhosts(), vec!["seed.example".to_string()]);
    // The untouched route kept serving.
    assert_eq!(served(&rw, "seed.example", "/"), "seed");
}

// ---------------------------------------------------------------------------
// 2. Read-your-writes across workers
// ---------------------------------------------------------------------------

#[test]
fn every_put_is_visible_to_the_next_request_on_any_worker() {
    let a = Backend::echo().named("a").start();
    let b = Backend::echo().named("b").start();
    let rw = Ringway::start_workers(admin_config(vec![route("ryw.example", "ROUND_ROBIN", vec![a.config()])]), 2);
    let api = rw.api();
    let t0 = Instant::now();
    const ITERATIONS: usize = 200;
    for i in 0..ITERATIONS {
        assert!(t0.elapsed() < Duration::from_secs(60), "only {i} iterations within 60 s");
        let target = if i % 2 == 0 { &b } else { &a };
        let body = json!({"vHost": "ryw.example", "strategy": "ROUND_ROBIN", "backends": [target.config()]});
        api.put("/api/v1/routes/ryw.example", &body).expect(200, &format!("PUT {i}"));
        let r = get(rw.addr(), "ryw.example", &format!("/iteration-{i}"));
        assert_eq!(r.status, 200, "iteration {i}:\n{}", r.head);
        assert_eq!(served_by(&r), target.name(), "iteration {i}: the request after the PUT went to the old backend");
        assert!(r.text().contains(&format!("target /iteration-{i}\n")), "iteration {i}: {}", r.text());
    }
    assert_eq!(a.proxied_count() + b.proxied_count(), ITERATIONS);
}

// ---------------------------------------------------------------------------
// 3. Backends and maintenance
// ---------------------------------------------------------------------------

#[test]
fn backends_can_be_added_removed_and_put_in_maintenance() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let rw = Ringway::start(admin_config(vec![route("pool.example", "ROUND_ROBIN", vec![a.config()])]));
    let api = rw.api();

    // Add b.
    let r = api.post("/api/v1/routes/pool.example/backends", &anon(&b)).expect(201, "POST a backend");
    let b_id = r.json["id"].as_str().unwrap_or_else(|| panic!("no id assigned: {}", r.json)).to_string();
    assert!(!b_id.is_empty() && b_id != "a", "bad id {b_id:?}");
    assert_eq!(r.json["port"], b.port(), "{}", r.json);
    let who: Vec<String> = (0..10).map(|i| served(&rw, "pool.example", &format!("/rr-{i}"))).collect();
    assert_eq!(who.iter().filter(|w| *w == "a").count(), 5, "round robin over a and b: {who:?}");
    assert_eq!(who.iter().filter(|w| *w == "b").count(), 5, "round robin over a and b: {who:?}");

    // Maintenance on a: no traffic to it.
    let r =
        api.call("POST", "/api/v1/routes/pool.example/backends/a/dead", &[], None).expect(200, "POST maintenance on a");
    assert_eq!(r.json["maintenance"], true, "{}", r.json);
    let a_before = a.proxied_count();
    for i in 0..20 {
        assert_eq!(served(&rw, "pool.example", &format!("/maint-{i}")), "b", "request {i} while a is in maintenance");
    }
    assert_eq!(a.proxied_count(), a_before, "a got traffic while in maintenance");
    let (_, cfg) = api.config();
    assert_eq!(cfg["maintenance"], json!([{"vHost": "pool.example", "backend": "a"}]), "{}", cfg["maintenance"]);

    // Back from maintenance.
    let r = api.delete("/api/v1/routes/pool.example/backends/a/dead").expect(200, "DELETE maintenance on a");
    assert_eq!(r.json["maintenance"], false, "{}", r.json);
    let who: Vec<String> = (0..10).map(|i| served(&rw, "pool.example", &format!("/back-{i}"))).collect();
    assert!(who.iter().any(|w| w == "a"), "a got no traffic after maintenance ended: {who:?}");

    // Remove b: traffic stops reaching it.
    api.delete(&format!("/api/v1/routes/pool.example/backends/{b_id}")).expect(204, "DELETE backend b");
    let b_before = b.proxied_count();
    for i in 0..20 {
        assert_eq!(served(&rw, "pool.example", &format!("/after-{i}")), "a", "request {i} after b was removed");
    }
    assert_eq!(b.proxied_count(), b_before);
    api.delete(&format!("/api/v1/routes/pool.example/backends/{b_id}")).expect(404, "DELETE backend b again");
}

// ---------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let a = Backend::respond(200, "a").named("a").start();
    let rw = Ringway::start(admin_config(vec![route("keep.example", "ROUND_ROBIN", vec![a.config()])]));
    let api = rw.api();
    let (etag0, cfg0) = api.config();
    let routes0 = api.routes();
    let good_backend = json!({"hostname": "127.0.0.1", "port": a.port()});

    let r = api.raw("POST", "/api/v1/routes", &[], Some(b"{\"vHost\": \"x.example\",")).expect(400, "malformed JSON");
    assert_eq!(r.error(), Some("invalidJson"), "{}", r.json);

    let body = json!({"vHost": "x.example", "backends": [good_backend], "bogusField": 1});
    let r = api.post("/api/v1/routes", &body).expect(400, "unknown field");
    assert!(r.field().is_some_and(|f| f.contains("bogusField")), "`field` does not name the unknown field: {}", r.json);

    let body = json!({"vHost": "x.example", "backends": [good_backend, {"hostname": "127.0.0.1", "port": 70000}]});
    let r = api.post("/api/v1/routes", &body).expect(400, "port 70000");
    assert_eq!(r.field(), Some("backends[1].port"), "{}", r.json);

    let body = json!({"vHost": "x.example", "strategy": "FASTEST_PLEASE", "backends": [good_backend]});
    let r = api.post("/api/v1/routes", &body).expect(400, "unknown strategy");
    assert_eq!(r.field(), Some("strategy"), "{}", r.json);

    let body = serde_json::to_vec(&json!({"vHost": "x.example", "backends": [good_backend]})).unwrap();
    api.raw("POST", "/api/v1/routes", &[("Content-Type", "text/plain")], Some(&body)).expect(415, "text/plain");

    // Over 1 MiB: refused on its Content-Length (the body need not be sent).
    let len = (1 << 20) + 1;
    let head = format!(
        "POST /api/v1/routes HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        rw.admin_addr()
    );
    let mut c = Client::connect(rw.admin_addr());
    c.send(head.as_bytes());
    let r = c.read_response(false).unwrap_or_else(|e| panic!("no answer to an over-long body: {e}"));
    assert_eq!(r.status, 413, "{}{}", r.head, r.text());

    let r = api.get("/api/v1/nothing-here").expect(404, "unknown path");
    assert_eq!(r.error(), Some("notFound"), "{}", r.json);
    assert!(r.response.header("content-type").is_some_and(|t| t.starts_with("application/json")));
    let r = api.call("PATCH", "/api/v1/routes", &[], Some(&json!({}))).expect(405, "PATCH /api/v1/routes");
    assert_eq!(r.error(), Some("methodNotAllowed"), "{}", r.json);
    assert!(r.response.header("content-type").is_some_and(|t| t.starts_with("application/json")));

    let (etag1, cfg1) = api.config();
    assert_eq!(etag1, etag0, "a refused request changed the ETag");
    assert_eq!(cfg1["routes"], cfg0["routes"]);
    assert_eq!(api.routes(), routes0);
    assert_eq!(get(rw.addr(), "x.example", "/").status, 404);
    assert_eq!(served(&rw, "keep.example", "/"), "a");
}

// ---------------------------------------------------------------------------
// 5. ETag, If-Match, dry runs
// ---------------------------------------------------------------------------

fn is_quoted_number(tag: &str) -> bool {
    tag.len() > 2
        && tag.starts_with('"')
        && tag.ends_with('"')
        && tag[1..tag.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn config_etag_if_match_and_dry_run() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let rw = Ringway::start(admin_config(vec![route("one.example", "ROUND_ROBIN", vec![a.config()])]));
    let api = rw.api();

    let (e0, cfg) = api.config();
    assert!(is_quoted_number(&e0), "ETag {e0:?} is not a quoted number");
    assert!(cfg["routes"].is_array(), "{cfg}");

    // Current If-Match: succeeds and moves the ETag.
    let two = json!({"vHost": "two.example", "backends": [b.config()]});
    api.call("POST", "/api/v1/routes", &[("If-Match", &e0)], Some(&two)).expect(201, "POST with the current If-Match");
    let (e1, _) = api.config();
    assert!(is_quoted_number(&e1), "ETag {e1:?} is not a quoted number");
    assert_ne!(e1, e0, "a write did not change the ETag");
    assert_eq!(served(&rw, "two.example", "/"), "b");

    // Stale If-Match: 412, nothing changes.
    let three = json!({"vHost": "three.example", "backends": [b.config()]});
    let r = api
        .call("POST", "/api/v1/routes", &[("If-Match", &e0)], Some(&three))
        .expect(412, "POST with a stale If-Match");
    assert_eq!(r.error(), Some("preconditionFailed"), "{}", r.json);
    let r = api.call("DELETE", "/api/v1/routes/one.example", &[("If-Match", &e0)], None);
    r.expect(412, "DELETE with a stale If-Match");
    assert_eq!(api.config().0, e1, "a 412 changed the ETag");
    assert_eq!(api.vhosts(), vec!["one.example".to_string(), "two.example".to_string()]);
    assert_eq!(get(rw.addr(), "three.example", "/").status, 404);
    assert_eq!(served(&rw, "one.example", "/"), "a");

    // The current one again.
    api.call("POST", "/api/v1/routes", &[("If-Match", &e1)], Some(&three)).expect(201, "POST with If-Match e1");
    let (e2, _) = api.config();
    assert_ne!(e2, e1);
    assert_eq!(served(&rw, "three.example", "/"), "b");

    // Dry run: 200, dryRun true, nothing changes.
    let four = json!({"vHost": "four.example", "backends": [a.config()]});
    let r = api.post("/api/v1/routes?dryRun=true", &four).expect(200, "dry-run POST");
    assert_eq!(r.json["dryRun"], true, "{}", r.json);
    let r = api.delete("/api/v1/routes/one.example?dryRun=true").expect(200, "dry-run DELETE");
    assert_eq!(r.json["dryRun"], true, "{}", r.json);
    assert_eq!(api.config().0, e2, "a dry run changed the ETag");
    api.get("/api/v1/routes/four.example").expect(404, "GET the dry-run route");
    api.get("/api/v1/routes/one.example").expect(200, "GET the dry-run-deleted route");
    assert_eq!(get(rw.addr(), "four.example", "/").status, 404);
    assert_eq!(served(&rw, "one.example", "/"), "a");
}

// ---------------------------------------------------------------------------
// 6. /health
// ---------------------------------------------------------------------------

#[test]
fn health_reports_live_backends_and_503_when_none() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let rw = Ringway::start(admin_config(vec![route("h.example", "ROUND_ROBIN", vec![a.config(), b.config()])]));
    let api = rw.api();

    let r = api.get("/health").expect(200, "GET /health");
    assert_eq!(r.json, json!({"status": "healthy", "healthy": 2, "total": 2}));

    api.call("POST", "/api/v1/routes/h.example/backends/a/dead", &[], None).expect(200, "maintenance a");
    let r = api.get("/health").expect(200, "GET /health with one backend left");
    assert_eq!(r.json, json!({"status": "healthy", "healthy": 1, "total": 2}));

    api.call("POST", "/api/v1/routes/h.example/backends/b/dead", &[], None).expect(200, "maintenance b");
    let r = api.get("/health").expect(503, "GET /health with every backend in maintenance");
    assert_eq!(r.json["status"], "unhealthy", "{}", r.json);
    assert_eq!((r.json["healthy"].as_u64(), r.json["total"].as_u64()), (Some(0), Some(2)), "{}", r.json);
    assert_eq!(get(rw.addr(), "h.example", "/").status, 503);

    api.delete("/api/v1/routes/h.example/backends/b/dead").expect(200, "end maintenance b");
    assert_eq!(api.get("/health").expect(200, "GET /health after maintenance").json["healthy"], 1);
}

// ---------------------------------------------------------------------------
// 7. Security
// ---------------------------------------------------------------------------

#[test]
fn token_host_and_origin_are_enforced() {
    let a = Backend::respond(200, "a").named("a").start();
    let rw =
        Ringway::start(with_admin(config(vec![route("s.example", "ROUND_ROBIN", vec![a.config()])]), Some("s3cret")));
    let bare = rw.api();
    let api = rw.api().with_token("s3cret");

    let r = bare.get("/api/v1/routes").expect(401, "no Authorization");
    assert_eq!(r.error(), Some("unauthorized"), "{}", r.json);
    bare.call("GET", "/api/v1/routes", &[("Authorization", "Bearer wrong")], None).expect(401, "wrong token");
    bare.call("GET", "/api/v1/routes", &[("Authorization", "Bearer s3cret0")], None).expect(401, "longer token");
    bare.call("GET", "/api/v1/routes", &[("Authorization", "Basic s3cret")], None).expect(401, "Basic scheme");
    let body = json!({"vHost": "x.example", "backends": [a.config()]});
    bare.post("/api/v1/routes", &body).expect(401, "POST without a token");
    api.get("/api/v1/routes").expect(200, "right token");
    assert_eq!(api.vhosts(), vec!["s.example".to_string()], "an unauthorized POST changed the routes");

    let r = api.call("GET", "/api/v1/routes", &[("Host", "evil.example")], None).expect(403, "Host: evil.example");
    assert_eq!(r.error(), Some("forbidden"), "{}", r.json);
    let port = rw.admin_addr().port().to_string();
    let evil_with_port = format!("evil.example:{port}");
    api.call("GET", "/api/v1/routes", &[("Host", &evil_with_port)], None).expect(403, "Host: evil.example:PORT");
    api.call("GET", "/api/v1/routes", &[("Origin", "http://evil.example")], None).expect(403, "Origin: evil");
    api.call("POST", "/api/v1/routes", &[("Origin", "http://evil.example")], Some(&body)).expect(403, "POST from evil");
    api.call("GET", "/api/v1/routes", &[("Origin", "http://localhost")], None).expect(200, "Origin: localhost");
    let local = format!("localhost:{port}");
    api.call("GET", "/api/v1/routes", &[("Host", &local)], None).expect(200, "Host: localhost:PORT");
    assert_eq!(api.vhosts(), vec!["s.example".to_string()]);

    // An admin listener off loopback needs a token.
    let cfg = json!({"listen": ["127.0.0.1:0"], "admin": {"listen": "0.0.0.0:0"}});
    let (code, stderr) = ringway_check(&cfg);
    assert_eq!(code, 1, "check accepted a non-loopback admin listener without a token:\n{stderr}");
    assert!(stderr.contains("admin.token"), "the error does not name admin.token:\n{stderr}");
}

// ---------------------------------------------------------------------------
// 8. The state file
// ---------------------------------------------------------------------------

#[test]
fn changes_persist_across_restarts_and_reset_state_forgets_them() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let dir = TempDir::new("persist");
    let cfg_path = dir.join("edge.json");
    let cfg = admin_config(vec![route("file.example", "ROUND_ROBIN", vec![a.config(), b.config()])]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let state_path = dir.join("edge.state.json");

    let mut rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();
    api.post("/api/v1/routes", &json!({"vHost": "added.example", "backends": [b.config()]})).expect(201, "POST");
    api.call("POST", "/api/v1/routes/file.example/backends/b/dead", &[], None).expect(200, "maintenance b");
    assert!(state_path.exists(), "no state file at {}", state_path.display());
    let mode = std::fs::metadata(&state_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode is {mode:o}");
    rw.stop();

    // Restart: the API's changes are back.
    let mut rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();
    assert_eq!(api.vhosts(), vec!["file.example".to_string(), "added.example".to_string()]);
    let (_, cfg_now) = api.config();
    assert_eq!(cfg_now["maintenance"], json!([{"vHost": "file.example", "backend": "b"}]), "{cfg_now}");
    assert_eq!(served(&rw, "added.example", "/"), "b");
    for i in 0..6 {
        assert_eq!(served(&rw, "file.example", &format!("/{i}")), "a", "request {i}: b is in maintenance");
    }
    // Changes are appended to the change log beside the state file (one
    // record each, not a rewrite of the snapshot), and they come back too.
    let log_path = dir.join("edge.state.json.log");
    let before = std::fs::metadata(&state_path).unwrap().modified().unwrap();
    api.call("DELETE", "/api/v1/routes/file.example/backends/b/dead", &[], None).expect(200, "maintenance off");
    api.delete("/api/v1/routes/added.example").expect(204, "DELETE");
    assert_eq!(std::fs::metadata(&state_path).unwrap().modified().unwrap(), before, "snapshot not rewritten");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().count(), 4, "the first run's route and maintenance, then off and the deletion:\n{log}");
    assert_eq!(std::fs::metadata(&log_path).unwrap().permissions().mode() & 0o777, 0o600);
    rw.stop();
    let mut rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();
    assert_eq!(api.vhosts(), vec!["file.example".to_string()]);
    assert_eq!(api.config().1["maintenance"], json!([]));
    api.post("/api/v1/routes", &json!({"vHost": "added.example", "backends": [b.config()]})).expect(201, "POST");
    rw.stop();

    // --reset-state: the config file's routes, no maintenance.
    let mut rw = Ringway::start_at(&cfg_path, 1, &["--reset-state"]);
    let api = rw.api();
    assert_eq!(api.vhosts(), vec!["file.example".to_string()]);
    let (_, cfg_now) = api.config();
    assert_eq!(cfg_now["maintenance"], json!([]), "{cfg_now}");
    assert_eq!(get(rw.addr(), "added.example", "/").status, 404);
    let who: Vec<String> = (0..4).map(|i| served(&rw, "file.example", &format!("/r{i}"))).collect();
    assert!(who.iter().any(|w| w == "b"), "b got no traffic after --reset-state: {who:?}");
    rw.stop();
}

#[test]
fn a_corrupt_state_file_stops_the_start_and_is_left_alone() {
    let a = Backend::respond(200, "a").named("a").start();
    let dir = TempDir::new("corrupt");
    let cfg_path = dir.join("edge.json");
    let cfg = admin_config(vec![route("file.example", "ROUND_ROBIN", vec![a.config()])]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let state_path = state_file_of(&cfg_path);
    let garbage: &[u8] = b"{\"routes\": [ this is not json \x00\x01";
    std::fs::write(&state_path, garbage).unwrap();

    match Ringway::try_start_at(&cfg_path, 1, "warn", &[]) {
        Ok(rw) => {
            panic!("ringway started on a corrupt state file; stderr:\n{}", rw.log());
        }
        Err(f) => {
            assert!(
                f.status.is_some_and(|s| !s.success()),
                "ringway did not exit non-zero: {:?}; stderr:\n{}",
                f.status,
                f.stderr
            );
            assert!(
                f.stderr.contains("state") && f.stderr.contains("edge.state.json"),
                "stderr does not say the state file is the problem:\n{}",
                f.stderr
            );
        }
    }
    assert_eq!(std::fs::read(&state_path).unwrap(), garbage, "the corrupt state file was changed");
}

// ---------------------------------------------------------------------------
// 9. SIGHUP
// ---------------------------------------------------------------------------

#[test]
fn sighup_applies_the_config_files_routes() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let dir = TempDir::new("sighup");
    let cfg_path = dir.join("edge.json");
    let x = admin_config(vec![route("x.example", "ROUND_ROBIN", vec![a.config()])]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&x).unwrap()).unwrap();
    let rw = Ringway::start_at(&cfg_path, 2, &[]);
    let api = rw.api();
    assert_eq!(api.vhosts(), vec!["x.example".to_string()]);
    assert_eq!(served(&rw, "x.example", "/"), "a");

    let y = admin_config(vec![
        route("y.example", "ROUND_ROBIN", vec![b.config()]),
        route("z.example", "ROUND_ROBIN", vec![a.config()]),
    ]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&y).unwrap()).unwrap();
    rw.signal("HUP");
    let want = vec!["y.example".to_string(), "z.example".to_string()];
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = api.vhosts();
        if now == want {
            break;
        }
        assert!(Instant::now() < deadline, "routes are {now:?} 3 s after SIGHUP, expected {want:?}:\n{}", rw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..4 {
        assert_eq!(served(&rw, "y.example", &format!("/{i}")), "b", "request {i}");
        assert_eq!(get(rw.addr(), "x.example", &format!("/{i}")).status, 404, "x.example still routed");
    }
    assert_eq!(served(&rw, "z.example", "/"), "a");
}

/// A self-signed certificate and key from the openssl command line
/// (scripts/test.sh installs openssl).
fn openssl_cert(dir: &std::path::Path, name: &str, cn: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (scripts/test.sh installs it)");
    assert!(status.success(), "openssl failed");
    (std::fs::read_to_string(cert).unwrap(), std::fs::read_to_string(key).unwrap())
}

#[test]
fn certificates_are_validated_stored_and_never_shown() {
    let dir = TempDir::new("certs");
    let (cert_a, key_a) = openssl_cert(dir.path(), "a", "a.example");
    let (cert_b, key_b) = openssl_cert(dir.path(), "b", "b.example");
    let cfg_path = dir.join("edge.json");
    let cfg = admin_config(vec![route("a.example", "ROUND_ROBIN", vec![])]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();

    let r = api
        .post("/api/v1/certificates", &json!({"domain": "A.example", "cert": cert_a, "key": key_a}))
        .expect(201, "a valid certificate");
    assert_eq!(r.json["domain"], "a.example");
    assert!(r.json["notAfter"].as_i64().unwrap_or(0) > 0, "{}", r.json);
    // The wrong key, garbage, a bad domain, unknown fields: 400 naming the field.
    let r = api
        .post("/api/v1/certificates", &json!({"domain": "b.example", "cert": cert_b, "key": key_a}))
        .expect(400, "a key that does not match");
    assert_eq!(r.json["field"], "key", "{}", r.json);
    let r = api
        .post("/api/v1/certificates", &json!({"domain": "b.example", "cert": "junk", "key": key_b}))
        .expect(400, "not a certificate");
    assert_eq!(r.json["field"], "cert", "{}", r.json);
    let r = api
        .post("/api/v1/certificates", &json!({"domain": "bad domain", "cert": cert_b, "key": key_b}))
        .expect(400, "a bad domain");
    assert_eq!(r.json["field"], "domain", "{}", r.json);
    api.post("/api/v1/certificates", &json!({"domain": "b.example", "cert": cert_b, "key": key_b, "x": 1}))
        .expect(400, "an unknown field");
    // Listed without keys; the key never appears in any response.
    let list = api.get("/api/v1/certificates").expect(200, "list");
    assert_eq!(list.json.as_array().map(Vec::len), Some(1), "{}", list.json);
    for path in ["/api/v1/certificates", "/api/v1/config"] {
        let body = api.get(path).json.to_string();
        assert!(!body.contains("PRIVATE KEY"), "{path} shows a private key");
    }
    // Kept across a restart (in the 0600 state file), and removable.
    rw.stop();
    let rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();
    assert_eq!(api.get("/api/v1/certificates").json[0]["domain"], "a.example");
    api.delete("/api/v1/certificates/a.example").expect(204, "delete");
    api.delete("/api/v1/certificates/a.example").expect(404, "delete again");
}

#[test]
fn a_backend_added_by_name_serves_as_soon_as_the_write_answers() {
    let b = Backend::respond(200, "by-name").start();
    let rw = Ringway::start(admin_config(vec![]));
    let api = rw.api();
    let backend = json!({"id": "named", "hostname": "localhost", "port": b.port()});
    api.post("/api/v1/routes", &json!({"vHost": "named.example", "backends": [backend]})).expect(201, "POST");
    // Resolved before the answer (not at the resolver's next round).
    let r = get(rw.addr(), "named.example", "/");
    assert_eq!((r.status, r.text()), (200, "by-name".to_string()), "{}", r.head);
}

#[test]
fn a_state_file_that_cannot_be_written_refuses_the_change_and_keeps_serving() {
    let a = Backend::respond(200, "a").start();
    let dir = TempDir::new("unwritable");
    let cfg_path = dir.join("edge.json");
    let cfg = admin_config(vec![route("file.example", "ROUND_ROBIN", vec![a.config()])]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    // A directory where the change log goes: no change can be made durable.
    let state_path = state_file_of(&cfg_path);
    let log_path = state_path.with_file_name("edge.state.json.log");
    std::fs::create_dir_all(log_path.join("in-the-way")).unwrap();
    let rw = Ringway::start_at(&cfg_path, 1, &[]);
    let api = rw.api();
    let reply = api.post("/api/v1/routes", &json!({"vHost": "added.example", "backends": [a.config()]}));
    assert_eq!(reply.status, 500, "{:?}", reply);
    assert_eq!(reply.error(), Some("persistFailed"), "{:?}", reply);
    assert_eq!(api.vhosts(), vec!["file.example".to_string()], "the running config is untouched");
    assert_eq!(get(rw.addr(), "added.example", "/").status, 404);
    assert_eq!(get(rw.addr(), "file.example", "/").status, 200);
    // Once the way is clear, writes go through again.
    std::fs::remove_dir_all(&log_path).unwrap();
    api.post("/api/v1/routes", &json!({"vHost": "added.example", "backends": [a.config()]})).expect(201, "POST");
    assert_eq!(get(rw.addr(), "added.example", "/").status, 200);
}

// ---------------------------------------------------------------------------
// Route explain
// ---------------------------------------------------------------------------

#[test]
fn explain_names_the_route_rule_forwarded_path_and_each_backends_eligibility() {
    let a = Backend::respond(200, "a").named("a").start();
    let b = Backend::respond(200, "b").named("b").start();
    let c = Backend::respond(200, "c").named("c").start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut rate_limited = route("rl.test", "ROUND_ROBIN", vec![a.config()]);
    rate_limited["rateLimit"] = json!({"requestsPerSecond": 100, "burst": 10, "key": "header:X-Api-Key"});
    let mut api_route = route("api.test", "ROUND_ROBIN", vec![a.config()]);
    api_route["paths"] = json!([{"prefix": "/api", "stripPrefix": true, "backends": [b.config()]}]);
    let rw = Ringway::start(admin_config(vec![
        api_route,
        route("hash.test", "IP_HASH", vec![a.config(), b.config(), c.config()]),
        route(
            "rr.test",
            "ROUND_ROBIN",
            vec![a.config(), json!({"id": "gone", "hostname": "127.0.0.1", "port": closed})],
        ),
        route("*.wild.test", "ROUND_ROBIN", vec![c.config()]),
        route("*", "ROUND_ROBIN", vec![c.config()]),
        rate_limited,
    ]));
    let api = rw.api();
    let explain = |q: &str| api.get(&format!("/api/v1/explain?{q}")).expect(200, q).json;
    // What a header-keyed rate limit counts this request under.
    let e = explain("host=rl.test&header=X-Api-Key%3A%20k1&header=Accept:*/*");
    assert_eq!(
        (&e["rateLimitKey"], &e["policies"]["rateLimit"]["key"]),
        (&json!("k1"), &json!("header:x-api-key")),
        "{e}"
    );
    assert_eq!(
        api.get("/api/v1/explain?host=rl.test&header=nocolon").expect(400, "bad header").field(),
        Some("header")
    );

    // How the host matched, the rule, and what the backend would see.
    let e = explain("host=API.test:8080&path=/api/users%3Fx%3D1");
    assert_eq!(e["route"]["vHost"], json!("api.test"), "{e}");
    assert_eq!(e["route"]["match"], json!("exact"));
    assert_eq!(e["pathRule"], json!({"prefix": "/api", "stripPrefix": true}));
    assert_eq!(e["forwardedPath"], json!("/users?x=1"));
    assert_eq!(e["backends"][0]["id"], json!("b"), "the rule's pool: {e}");
    assert_eq!(explain("host=x.wild.test")["route"]["match"], json!("wildcard"));
    assert_eq!(explain("host=nothing.example")["route"]["match"], json!("catchAll"));

    // IP_HASH: the backend named is the one that serves this client, and
    // a backend in maintenance is neither eligible nor picked.
    api.call("POST", "/api/v1/routes/hash.test/backends/b/dead", &[], None).expect(200, "maintenance b");
    let e = explain("host=hash.test&client=127.0.0.1");
    let next = e["next"].as_str().unwrap_or_else(|| panic!("next: {e}")).to_string();
    assert_ne!(next, "b", "{e}");
    let b_row = e["backends"].as_array().unwrap().iter().find(|x| x["id"] == "b").cloned().unwrap();
    assert_eq!((&b_row["eligible"], &b_row["reason"]), (&json!(false), &json!("maintenance")));
    for i in 0..4 {
        assert_eq!(served(&rw, "hash.test", &format!("/{i}")), next, "explain said {next}");
    }
    assert!(explain("host=hash.test")["next"].is_null(), "no client, no pick");
    assert!(explain("host=api.test")["next"].is_null(), "round robin: per worker");

    // A backend that refused a connection is down, and says since when.
    for i in 0..3 {
        assert_eq!(served(&rw, "rr.test", &format!("/{i}")), "a");
    }
    // (The worker reports the failure to the control thread on its own
    // channel: wait for it, bounded.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let e = explain("host=rr.test");
        let gone = e["backends"].as_array().unwrap().iter().find(|x| x["id"] == "gone").cloned().unwrap();
        if gone["eligible"] == json!(false) || Instant::now() > deadline {
            break gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gone["eligible"], json!(false), "{gone}");
    assert!(gone["reason"].as_str().is_some_and(|r| r.starts_with("down")), "{gone}");

    // Bad questions get 400 naming the field; other methods 405.
    assert_eq!(api.get("/api/v1/explain?path=/x").expect(400, "no host").field(), Some("host"));
    assert_eq!(api.get("/api/v1/explain?host=a&client=nope").expect(400, "bad client").field(), Some("client"));
    assert_eq!(api.get("/api/v1/explain?host=a&path=x").expect(400, "bad path").field(), Some("path"));
    api.call("POST", "/api/v1/explain?host=a", &[], None).expect(405, "POST");

    // And the ctl prints it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["ctl", "explain", "http://api.test/api/users", "127.0.0.1"])
        .env("RINGWAY_ADMIN", rw.admin_addr().to_string())
        .output()
        .expect("run ringway ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api.test (exact match") && text.contains("/api, stripped"), "{text}");
    assert!(text.contains("forwards  /users"), "{text}");
}

#[test]
fn a_dry_run_reports_its_impact_and_how_many_ip_hash_clients_would_move() {
    let bs: Vec<BackendHandle> =
        ["a", "b", "c", "d"].iter().map(|n| Backend::respond(200, n).named(n).start()).collect();
    let rw = Ringway::start(admin_config(vec![
        route("hash.test", "IP_HASH", bs[..3].iter().map(|b| b.config()).collect()),
        route("rr.test", "ROUND_ROBIN", vec![bs[0].config()]),
    ]));
    let api = rw.api();
    let impact = |r: ApiReply| -> Value {
        assert_eq!(r.json["dryRun"], json!(true), "{:?}", r.json);
        r.json["impact"]["routes"].clone()
    };
    // A fourth backend: about a quarter of clients move (consistent hashing).
    let rows =
        impact(api.post("/api/v1/routes/hash.test/backends?dryRun=true", &bs[3].config()).expect(200, "dry add"));
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let r = &rows[0];
    assert_eq!(
        (&r["vHost"], &r["change"], &r["backendsAdded"]),
        (&json!("hash.test"), &json!("changed"), &json!(["d"]))
    );
    let moved = r["movedPercent"].as_f64().unwrap_or(-1.0);
    assert!((10.0..=40.0).contains(&moved), "adding 1 backend to 3 moves ~25 %: {moved}");
    // Maintenance on one of three: its third moves, nobody else.
    let rows = impact(
        api.call("POST", "/api/v1/routes/hash.test/backends/b/dead?dryRun=true", &[], None).expect(200, "dry dead"),
    );
    let moved = rows[0]["movedPercent"].as_f64().unwrap_or(-1.0);
    assert!((20.0..=46.0).contains(&moved), "one of three out moves ~33 %: {moved} {rows}");
    // Removing and adding routes; a round-robin pool has no movedPercent.
    let rows = impact(api.delete("/api/v1/routes/rr.test?dryRun=true").expect(200, "dry delete"));
    assert_eq!((&rows[0]["change"], &rows[0]["backendsRemoved"]), (&json!("removed"), &json!(["a"])));
    let new = route("new.test", "IP_HASH", vec![bs[0].config()]);
    let rows = impact(api.post("/api/v1/routes?dryRun=true", &new).expect(200, "dry create"));
    assert_eq!((&rows[0]["change"], &rows[0]["movedPercent"]), (&json!("added"), &Value::Null));
    let rows = impact(api.post("/api/v1/routes/rr.test/backends?dryRun=true", &bs[1].config()).expect(200, "dry rr"));
    assert_eq!((&rows[0]["change"], &rows[0]["movedPercent"]), (&json!("changed"), &Value::Null));
    // The ctl shows it as a table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["ctl", "--dry-run", "add-backend", "hash.test", &format!("127.0.0.1:{}", bs[3].port()), "1", "d"])
        .env("RINGWAY_ADMIN", rw.admin_addr().to_string())
        .output()
        .expect("run ringway ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("hash.test")).unwrap_or("");
    assert!(text.starts_with("dry run: nothing changed") && row.contains("changed") && row.contains('%'), "{text}");
    // Nothing changed.
    assert_eq!(api.vhosts(), vec!["hash.test".to_string(), "rr.test".to_string()]);
    assert_eq!(api.config().1["maintenance"], json!([]));
    let who: std::collections::HashSet<String> = (0..3).map(|i| served(&rw, "hash.test", &format!("/{i}"))).collect();
    assert_eq!(who.len(), 1, "one client, one backend: {who:?}");
}

#[test]
fn explain_says_admission_full_while_the_routes_active_requests_are_taken() {
    let slow = Backend::respond(200, "slow").named("slow").delayed(Duration::from_millis(1500)).start();
    let mut r = route("busy.test", "ROUND_ROBIN", vec![slow.config()]);
    r["reqActiveLength"] = json!(1);
    r["reqQueueLength"] = json!(5);
    let rw = Ringway::start_workers(admin_config(vec![r]), 1);
    let api = rw.api();
    let explain = || api.get("/api/v1/explain?host=busy.test&path=/").expect(200, "explain").json;
    let idle = explain();
    assert_eq!(idle["admission"]["full"], json!(false), "{idle}");
    assert_eq!(idle["backends"][0]["reason"], json!("up"), "{idle}");
    let addr = rw.addr();
    let held = std::thread::spawn(move || get(addr, "busy.test", "/").status);
    // Bounded: the request reaches the backend within a few polls.
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let v = explain();
        if v["admission"]["full"] == json!(true) {
            break v;
        }
        assert!(Instant::now() < deadline, "the route never looked full: {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let b = &busy["backends"][0];
    assert_eq!(b["eligible"], json!(false), "{busy}");
    assert!(b["reason"].as_str().is_some_and(|r| r.starts_with("admission full")), "{busy}");
    assert_eq!(busy["admission"]["activePerWorker"], json!([1]), "{busy}");
    assert_eq!(held.join().expect("the held request"), 200);
    let after = explain();
    assert_eq!(
        (after["admission"]["full"].clone(), after["backends"][0]["reason"].clone()),
        (json!(false), json!("up"))
    );
}
