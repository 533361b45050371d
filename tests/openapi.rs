//! The admin API's OpenAPI contract (`GET /api/v1/openapi.json`), kept true
//! by schemathesis (PyPI; scripts/test.sh installs it) against a live
//! ringway with every check on: no 5xx, answers match their schemas,
//! status codes and content types documented, schema-valid requests
//! accepted and schema-violating ones refused, 405 with Allow for other
//! methods, deleted resources gone. tests/openapi/schemathesis.toml says
//! which state-dependent statuses a valid request may get, and why.
//!
//! It runs in a network namespace of its own (`unshare --net`): generated
//! routes name random hosts, and in there no name resolves and nothing
//! leaves loopback.

mod support;

use std::process::Command;

use serde_json::json;
use support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi");

#[test]
fn schemathesis_finds_nothing_against_a_live_ringway() {
    let dir = TempDir::new("openapi");
    // Ports inside the namespace are all free: fixed ones are fine.
    let cfg = json!({
        "listen": ["127.0.0.1:8080"],
        "admin": {"listen": "127.0.0.1:9901", "token": "st-token"},
        "health": {"intervalMs": 0},
        "stateFile": dir.join("state.json"),
        "routes": [{"vHost": "a.example", "backends": [{"id": "x", "hostname": "127.0.0.1", "port": 9}],
                    "cache": {"ttlMs": 1000}}],
    });
    let path = dir.join("ringway.json");
    std::fs::write(&path, cfg.to_string()).expect("write the config");
    let examples = std::env::var("OPENAPI_EXAMPLES").unwrap_or_else(|_| "40".into());
    let out = Command::new("unshare")
        .args(["--net", &format!("{DIR}/run.sh"), ringway_bin()])
        .arg(&path)
        .args(["9901", "st-token", "--max-examples", &examples])
        .output()
        .expect("unshare (util-linux; the test needs root for a network namespace)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems (or could not run):\n{text}");
    assert!(text.contains("generated") && text.contains("Tested: 22"), "every operation was tested:\n{text}");
}

#[test]
fn the_document_is_served_and_names_every_endpoint() {
    let b = Backend::respond(200, "x").named("x").start();
    let rw = Ringway::start(with_admin(config(vec![route("x.example", "ROUND_ROBIN", vec![b.config()])]), None));
    let doc = rw.api().get("/api/v1/openapi.json").expect(200, "GET /api/v1/openapi.json").json;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    for p in [
        "/api/v1/routes",
        "/api/v1/routes/{vHost}",
        "/api/v1/routes/{vHost}/backends",
        "/api/v1/routes/{vHost}/backends/{id}",
        "/api/v1/routes/{vHost}/backends/{id}/dead",
        "/api/v1/config",
        "/api/v1/certificates",
        "/api/v1/certificates/{domain}",
        "/api/v1/stats",
        "/api/v1/stats/{vHost}",
        "/api/v1/explain",
        "/api/v1/cache/{vHost}",
        "/api/v1/info",
        "/api/v1/history",
        "/api/v1/openapi.json",
        "/api/v1/upgrade",
        "/api/v1/cluster",
        "/health",
        "/metrics",
    ] {
        assert!(paths.iter().any(|x| x.as_str() == p), "{p} is not documented");
    }
    // Another method: 405 with Allow, as the document's methods say.
    let r = rw.api().delete("/api/v1/config");
    assert_eq!(r.status, 405);
    assert_eq!(r.response.header("allow"), Some("GET"), "{}", r.response.head);
    // A dry run that is not true or false changes nothing and says so.
    let r = rw.api().delete("/api/v1/routes/x.example?dryRun=yes");
    assert_eq!((r.status, r.json["field"].as_str()), (400, Some("dryRun")), "{}", r.response.head);
    assert_eq!(rw.api().routes().len(), 1, "the route is still there");
}
