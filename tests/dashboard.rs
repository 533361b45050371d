//! The dashboard in a real browser: Chromium driven by playwright-core
//! (tests/dashboard/dashboard.mjs; scripts/test.sh installs both) against a
//! running ringway with traffic. It signs in with the admin token, checks
//! the numbers against the stats API, puts a backend in maintenance from
//! the page and sees traffic move, and takes a screenshot under load
//! (DASHBOARD_SCREENSHOT names where; README shows
//! bench-results/dashboard.png). The page's own answers (files, security
//! headers, Host checks) are checked over a socket here too.

mod support;

use std::process::Command;

use serde_json::json;
use support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard");

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed (scripts/test.sh installs it)")
}

#[test]
fn the_dashboard_shows_live_numbers_and_toggles_maintenance_in_a_real_browser() {
    assert!(
        std::path::Path::new(&format!("{DIR}/node_modules/playwright-core")).exists(),
        "playwright-core is not installed in tests/dashboard (scripts/test.sh installs it)"
    );
    let ids = ["a", "b", "c"];
    let backends: Vec<BackendHandle> = ids.iter().map(|id| Backend::respond(200, id).named(id).start()).collect();
    let route = route("dash.example", "ROUND_ROBIN", backends.iter().map(BackendHandle::config).collect());
    let rw = Ringway::start(with_admin(config(vec![route]), Some("dash-token")));
    let shot = std::env::var("DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| temp_path("dashboard", "png"));
    let out = Command::new("timeout")
        .args(["120", "node", &format!("{DIR}/dashboard.mjs")])
        .env("ADMIN", format!("http://{}", rw.admin_addr()))
        .env("PROXY", rw.addr().to_string())
        .env("VHOST", "dash.example")
        .env("BACKENDS", ids.join(","))
        .env("TOKEN", "dash-token")
        .env("SCREENSHOT", &shot)
        .env("CHROMIUM", chromium())
        .output()
        .expect("node tests/dashboard/dashboard.mjs (scripts/test.sh installs node)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{text}\nringway log:\n{}", rw.log());
    assert!(text.contains("dashboard: ok"), "{text}");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot ({} bytes)", png.len());
    if std::env::var_os("DASHBOARD_SCREENSHOT").is_none() {
        let _ = std::fs::remove_file(&shot);
    }
}

#[test]
fn the_dashboards_files_are_embedded_guarded_and_need_no_token() {
    let b = Backend::respond(200, "x").named("x").start();
    let rw = Ringway::start(with_admin(config(vec![route("x.example", "ROUND_ROBIN", vec![b.config()])]), Some("t")));
    let admin = rw.admin_addr();
    let host = admin.to_string();
    for (path, kind) in [("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let r = get(admin, &host, path);
        assert_eq!(r.status, 200, "GET {path}:\n{}", r.head);
        assert!(r.header("content-type").is_some_and(|c| c.starts_with(kind)), "{path}: {}", r.head);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{}", r.head);
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{}", r.head);
    }
    assert!(get(admin, &host, "/").text().contains("/ui/app.js"), "the page loads its script");
    assert_eq!(get(admin, &host, "/ui/missing.js").status, 404);
    // The page holds no data: the API behind it still wants the token.
    assert_eq!(get(admin, &host, "/api/v1/info").status, 401);
    // DNS rebinding: a foreign Host gets nothing, not even the page.
    assert_eq!(get(admin, "evil.example", "/").status, 403);
    // Refused before its body is read: nothing of a 1 MB body is waited for.
    let refused =
        exchange(admin, b"POST /api/v1/routes HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 1000000\r\n\r\n");
    assert_eq!(refused.status, 403, "{}", refused.head);
    let api = rw.api().with_token("t");
    let info = api.get("/api/v1/info").expect(200, "GET /api/v1/info").json;
    assert_eq!(info["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(info["routes"], json!(1));
    let history = api.get("/api/v1/history").expect(200, "GET /api/v1/history").json;
    let seconds = history["second"].as_array().expect("columns").len();
    assert!(seconds >= 1 && history["requests"].as_array().map(Vec::len) == Some(seconds), "{history}");
}
