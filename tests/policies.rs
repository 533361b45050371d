//! Traffic policies end to end (issue 10, first slice): Basic and Bearer
//! auth, rate limits that hold across workers, CORS; bad policy configs
//! refused naming the field with nothing changed.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn get_with(rw: &Ringway, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    exchange(rw.addr(), req.as_bytes())
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn basic_auth_checks_bcrypt_and_argon2id_hashes_and_caches_nothing_in_plain_text() {
    let b = Backend::respond(200, "secret page").start();
    let bcrypt_hash = bcrypt::hash("open sesame", 4).expect("bcrypt");
    let argon_hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"ringway-test-salt").expect("salt");
        argon2::Argon2::default().hash_password(b"hunter2", &salt).expect("argon2").to_string()
    };
    let mut r = route("auth.test", "ROUND_ROBIN", vec![b.config()]);
    r["auth"] = json!({"type": "basic", "realm": "staff", "users": {"alice": bcrypt_hash, "bob": argon_hash}});
    let public_backend = json!({"id": "pub", "hostname": "127.0.0.1", "port": b.port()});
    r["paths"] = json!([{"prefix": "/public", "backends": [public_backend], "auth": {"type": "none"}}]);
    let rw = Ringway::start_workers(with_admin(config(vec![r]), None), 2);

    let none = get_with(&rw, "auth.test", "/", &[]);
    assert_eq!(none.status, 401, "{}", none.head);
    assert_eq!(none.header("www-authenticate"), Some("Basic realm=\"staff\", charset=\"UTF-8\""), "{}", none.head);
    let wrong = get_with(&rw, "auth.test", "/", &[("Authorization", &basic("alice", "guess"))]);
    assert_eq!(wrong.status, 401, "{}", wrong.head);
    let unknown = get_with(&rw, "auth.test", "/", &[("Authorization", &basic("mallory", "open sesame"))]);
    assert_eq!(unknown.status, 401, "{}", unknown.head);
    assert_eq!(b.proxied_count(), 0, "no unauthenticated request reaches the backend");
    for _ in 0..3 {
        let ok = get_with(&rw, "auth.test", "/", &[("Authorization", &basic("alice", "open sesame"))]);
        assert_eq!((ok.status, ok.text()), (200, "secret page".to_string()), "{}", ok.head);
    }
    let argon = get_with(&rw, "auth.test", "/", &[("Authorization", &basic("bob", "hunter2"))]);
    assert_eq!(argon.status, 200, "argon2id: {}", argon.head);
    assert_eq!(get_with(&rw, "auth.test", "/public/x", &[]).status, 200, "a rule with auth none is public");

    // The API never shows the hashes.
    let shown = rw.api().get("/api/v1/routes/auth.test").expect(200, "GET route").json;
    assert_eq!(shown["auth"]["users"]["alice"], "<redacted>", "{shown}");
    assert!(!shown.to_string().contains("$2b$"), "{shown}");
}

#[test]
fn a_plain_text_password_or_a_bad_policy_is_refused_naming_the_field_and_nothing_changes() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(config(vec![route("keep.test", "ROUND_ROBIN", vec![b.config()])]), None));
    let api = rw.api();
    let cases = [
        (json!({"type": "basic", "users": {"alice": "hunter2"}}), "auth", "routes.auth.users.alice"),
        (json!({"type": "bearer", "tokens": ["not-a-digest"]}), "auth", "routes.auth.tokens[0]"),
        (json!({"type": "magic"}), "auth", "routes.auth.type"),
        (json!({"requestsPerSecond": 10, "burst": 0}), "rateLimit", "routes.rateLimit.burst"),
        (json!({"allowOrigins": ["*"], "allowCredentials": true}), "cors", "routes.cors.allowCredentials"),
    ];
    for (policy, name, field) in cases {
        let mut r = route("new.test", "ROUND_ROBIN", vec![b.config()]);
        r[name] = policy.clone();
        let reply = api.post("/api/v1/routes", &r);
        assert_eq!(reply.status, 400, "{policy}: {:?}", reply.json);
        let f = reply.field().unwrap_or("");
        assert!(
            field.ends_with(f) || f.ends_with(field.trim_start_matches("routes.")),
            "{policy}: field {f:?}, want {field}"
        );
    }
    assert_eq!(api.vhosts(), vec!["keep.test".to_string()], "nothing changed");
}

#[test]
fn bearer_tokens_are_checked_by_digest() {
    let b = Backend::respond(200, "api").start();
    let mut r = route("api.test", "ROUND_ROBIN", vec![b.config()]);
    r["auth"] = json!({"type": "bearer", "tokens": [sha256_hex("tok-1"), sha256_hex("tok-2")]});
    let rw = Ringway::start(config(vec![r]));
    let none = get_with(&rw, "api.test", "/", &[]);
    assert_eq!((none.status, none.header("www-authenticate")), (401, Some("Bearer")), "{}", none.head);
    assert_eq!(get_with(&rw, "api.test", "/", &[("Authorization", "Bearer tok-3")]).status, 401);
    assert_eq!(get_with(&rw, "api.test", "/", &[("Authorization", "Bearer tok-2")]).status, 200);
    assert_eq!(get_with(&rw, "api.test", "/", &[("authorization", "bearer tok-1")]).status, 200);
    assert_eq!(b.proxied_count(), 2);
}

#[test]
fn a_rate_limit_answers_429_with_its_headers_and_keys_apart() {
    let b = Backend::respond(200, "ok").start();
    let mut r = route("rl.test", "ROUND_ROBIN", vec![b.config()]);
    r["rateLimit"] = json!({"requestsPerSecond": 1, "burst": 3, "key": "header:X-Api-Key"});
    let rw = Ringway::start(config(vec![r]));
    let statuses: Vec<u16> = (0..6).map(|_| get_with(&rw, "rl.test", "/", &[("X-Api-Key", "a")]).status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 3, "burst 3: {statuses:?}");
    let refused = get_with(&rw, "rl.test", "/", &[("X-Api-Key", "a")]);
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert_eq!(refused.header("retry-after"), Some("1"), "{}", refused.head);
    assert_eq!(refused.header("ratelimit-limit"), Some("1"), "{}", refused.head);
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"), "{}", refused.head);
    assert!(refused.header("ratelimit-reset").is_some(), "{}", refused.head);
    assert_eq!(get_with(&rw, "rl.test", "/", &[("X-Api-Key", "b")]).status, 200, "another key, its own bucket");
}

#[test]
fn a_rate_limit_holds_for_the_whole_process_across_workers_and_connections() {
    let b = Backend::respond(200, "ok").start();
    const RATE: u32 = 100;
    let mut r = route("rate.test", "ROUND_ROBIN", vec![b.config()]);
    r["rateLimit"] = json!({"requestsPerSecond": RATE, "burst": 10});
    let rw = Ringway::start_workers(config(vec![r]), 2);
    // 20 connections (new ones, so both workers take some), together about
    // 2 × RATE requests a second, for 3 seconds.
    let addr = rw.addr();
    let started = Instant::now();
    let run = Duration::from_secs(3);
    let threads: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut limited) = (0u32, 0u32);
                let until = Instant::now() + run;
                while Instant::now() < until {
                    let r = exchange(addr, b"GET / HTTP/1.1\r\nHost: rate.test\r\nConnection: close\r\n\r\n");
                    match r.status {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("status {s}"),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in threads {
        let (o, l) = t.join().expect("client");
        ok += o;
        limited += l;
    }
    let secs = started.elapsed().as_secs_f64();
    let expected = 10.0 + f64::from(RATE) * secs;
    eprintln!("{ok} passed, {limited} limited in {secs:.2} s; expected about {expected:.0}");
    assert!(limited > 0, "the clients sent more than the limit");
    let ratio = f64::from(ok) / expected;
    assert!((0.9..=1.1).contains(&ratio), "{ok} passed, expected {expected:.0} ± 10 %");
}

#[test]
fn cors_preflights_are_answered_here_and_allowed_origins_get_their_headers() {
    let b = Backend::respond(200, "data").start();
    let mut r = route("cors.test", "ROUND_ROBIN", vec![b.config()]);
    r["cors"] = json!({"allowOrigins": ["https://app.example.com"], "allowMethods": ["GET", "PUT"],
                       "allowHeaders": ["X-Token"], "exposeHeaders": ["X-Total"], "maxAgeS": 300,
                       "allowCredentials": true});
    let rw = Ringway::start(config(vec![r]));
    let pre = exchange(
        rw.addr(),
        b"OPTIONS /items HTTP/1.1\r\nHost: cors.test\r\nOrigin: https://app.example.com\r\n\
          Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-token\r\n\r\n",
    );
    assert_eq!(pre.status, 204, "{}", pre.head);
    assert_eq!(pre.header("access-control-allow-origin"), Some("https://app.example.com"), "{}", pre.head);
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET, PUT"), "{}", pre.head);
    assert_eq!(pre.header("access-control-allow-headers"), Some("x-token"), "{}", pre.head);
    assert_eq!(pre.header("access-control-max-age"), Some("300"), "{}", pre.head);
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"), "{}", pre.head);
    let bad = exchange(
        rw.addr(),
        b"OPTIONS /items HTTP/1.1\r\nHost: cors.test\r\nOrigin: https://evil.example\r\n\
          Access-Control-Request-Method: PUT\r\n\r\n",
    );
    assert_eq!(bad.status, 403, "{}", bad.head);
    assert_eq!(b.proxied_count(), 0, "preflights never reach the backend");

    let ok = get_with(&rw, "cors.test", "/items", &[("Origin", "https://app.example.com")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example.com"), "{}", ok.head);
    assert_eq!(ok.header("vary"), Some("Origin"), "{}", ok.head);
    assert_eq!(ok.header("access-control-expose-headers"), Some("X-Total"), "{}", ok.head);
    let other = get_with(&rw, "cors.test", "/items", &[("Origin", "https://evil.example")]);
    assert_eq!(other.status, 200);
    assert!(other.header("access-control-allow-origin").is_none(), "{}", other.head);
    let plain = get_with(&rw, "cors.test", "/items", &[]);
    assert!(plain.header("access-control-allow-origin").is_none(), "{}", plain.head);
}

#[test]
fn a_circuit_breaker_opens_on_live_failures_and_closes_after_a_good_trial() {
    use std::sync::atomic::AtomicU16;
    use std::sync::Arc;
    // `flaky` answers 500 while `status` says so; `steady` always 200.
    let status = Arc::new(AtomicU16::new(500));
    let flaky = Backend::switchable(status.clone(), "flaky").named("flaky").start();
    let steady = Backend::respond(200, "steady").named("steady").start();
    let mut r = route("cb.test", "ROUND_ROBIN", vec![flaky.config(), steady.config()]);
    r["circuitBreaker"] = json!({"consecutiveFailures": 3, "openMs": 300, "halfOpenRequests": 1,
                                 "countStatus5xx": true, "errorRatePercent": 0});
    let rw = Ringway::start(with_admin(config(vec![r]), None));
    // Round robin: every other request meets the 500s until the breaker opens.
    let statuses: Vec<u16> = (0..20).map(|i| get(rw.addr(), "cb.test", &format!("/{i}")).status).collect();
    let fives = statuses.iter().filter(|&&s| s == 500).count();
    assert_eq!(fives, 3, "three failures open the breaker, then the flaky backend gets nothing: {statuses:?}");
    let seen = rw.api().get("/api/v1/stats").expect(200, "stats").json;
    let b = seen["backends"].as_array().and_then(|a| a.iter().find(|b| b["id"] == "flaky").cloned());
    assert_eq!(b.map(|b| b["circuit"].clone()), Some(json!("open")), "{seen}");
    assert!(rw.log().contains("circuit breaker"), "a change of state is logged:\n{}", rw.log());
    // And the ctl's backend table shows it.
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["ctl", "stats"])
        .env("RINGWAY_ADMIN", rw.admin_addr().to_string())
        .output()
        .expect("run ringway ctl");
    let table = String::from_utf8_lossy(&ctl.stdout);
    let row = table.lines().find(|l| l.contains("flaky")).unwrap_or("");
    assert!(table.contains("CIRCUIT") && row.contains("open ("), "ctl stats:\n{table}");
    // Healthy again: after openMs one trial passes and closes it.
    status.store(200, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(350));
    let after: Vec<String> = (0..6).map(|i| get(rw.addr(), "cb.test", &format!("/a{i}")).text()).collect();
    assert!(after.iter().filter(|t| *t == "flaky").count() >= 2, "closed again, flaky serves: {after:?}");
}

/// An auth provider on 127.0.0.1: `Bearer good` → 200 with `X-User:
/// alice`; `Bearer forbidden` → 403 "no entry"; else 401 with a challenge
/// and "who are you". Keep-alive; counts requests and keeps the last head.
struct Provider {
    addr: std::net::SocketAddr,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn provider() -> Provider {
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let addr = head_server(move |head| {
        let lower = head.to_ascii_lowercase();
        seen.lock().expect("lock").push(head.to_string());
        if lower.contains("authorization: bearer good") {
            "HTTP/1.1 200 OK\r\nX-User: alice\r\nX-Other: no\r\nContent-Length: 0\r\n\r\n".to_string()
        } else if lower.contains("authorization: bearer forbidden") {
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 8\r\n\r\nno entry".to_string()
        } else {
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"p\"\r\nContent-Length: 11\r\n\r\nwho are you"
                .to_string()
        }
    });
    Provider { addr, asked }
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1 for bodiless requests: each
/// request's head (request line and fields, without the blank line) goes to
/// `respond`, whose answer is written back as it is.
fn head_server(respond: impl Fn(&str) -> String + Send + Sync + 'static) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                let mut r = BufReader::new(conn);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if !matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    if w.write_all(respond(&head).as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn an_auth_provider_decides_and_its_headers_reach_the_backend_never_the_clients_copy() {
    let p = provider();
    let b = Backend::echo().start();
    let mut r = route("ap.test", "ROUND_ROBIN", vec![b.config()]);
    r["authProvider"] = json!({"url": format!("http://{}/check?x=1", p.addr), "timeoutMs": 2000,
                               "forwardHeaders": ["Authorization"], "copyHeaders": ["X-User"]});
    let rw = Ringway::start(config(vec![r]));
    let ok = get_with(&rw, "ap.test", "/orders/7?q=1", &[("Authorization", "Bearer good"), ("X-User", "mallory")]);
    assert_eq!(ok.status, 200, "{}", ok.head);
    let seen = ok.text().to_ascii_lowercase();
    assert!(seen.contains("x-user: alice"), "the provider's X-User reaches the backend:\n{seen}");
    assert!(!seen.contains("mallory"), "the client's own X-User never does:\n{seen}");
    assert!(!seen.contains("x-other"), "only copyHeaders are copied:\n{seen}");
    let asked = p.asked.lock().expect("lock").last().cloned().unwrap_or_default().to_ascii_lowercase();
    assert!(asked.starts_with("get /check?x=1 http/1.1"), "{asked}");
    assert!(asked.contains("x-original-uri: /orders/7?q=1"), "{asked}");
    assert!(asked.contains("authorization: bearer good"), "{asked}");

    let none = get_with(&rw, "ap.test", "/", &[]);
    assert_eq!((none.status, none.text()), (401, "who are you".to_string()), "{}", none.head);
    assert_eq!(none.header("www-authenticate"), Some("Bearer realm=\"p\""), "{}", none.head);
    let no = get_with(&rw, "ap.test", "/", &[("Authorization", "Bearer forbidden")]);
    assert_eq!((no.status, no.text()), (403, "no entry".to_string()), "{}", no.head);
    assert_eq!(b.proxied_count(), 1, "only the allowed request reached the backend");
}

#[test]
fn a_silent_or_absent_auth_provider_fails_closed_with_503() {
    let silent = Backend::silent().start();
    let b = Backend::respond(200, "ok").start();
    let mut r = route("slow.test", "ROUND_ROBIN", vec![b.config()]);
    r["authProvider"] = json!({"url": format!("http://127.0.0.1:{}/check", silent.port()), "timeoutMs": 300});
    let mut gone = route("gone.test", "ROUND_ROBIN", vec![b.config()]);
    gone["authProvider"] = json!({"url": format!("http://127.0.0.1:{}/check", refused_port())});
    let rw = Ringway::start(config(vec![r, gone]));
    let t = Instant::now();
    assert_eq!(get_with(&rw, "slow.test", "/", &[("Authorization", "Bearer good")]).status, 503);
    eprintln!("answered after {:?} (timeoutMs 300)", t.elapsed());
    assert_eq!(get_with(&rw, "gone.test", "/", &[]).status, 503);
    assert_eq!(b.proxied_count(), 0, "the backend is never reached");
}

#[test]
fn the_seeds_string_form_of_auth_provider_is_refused_showing_the_object_form() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(config(vec![]), None));
    let mut r = route("s.test", "ROUND_ROBIN", vec![b.config()]);
    r["authProvider"] = json!("my-provider");
    let reply = rw.api().post("/api/v1/routes", &r);
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    assert_eq!(reply.field(), Some("authProvider"), "{:?}", reply.json);
    assert!(reply.json.to_string().contains("\\\"url\\\""), "the message shows the object form: {:?}", reply.json);
}

/// A backend whose answers depend on the path: `/plain` (cacheable),
/// `/nostore` (Cache-Control: no-store), `/cookie` (Set-Cookie), `/short`
/// (max-age=1), `/bare` (no Cache-Control), `/vary` (varies on
/// Accept-Language and answers with it), `/star` (Vary: *), `/slow`
/// (cacheable, after 300 ms). Counts requests per path.
fn cache_backend() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<HashMap<String, u32>>>) {
    let hits = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let seen = hits.clone();
    let addr = head_server(move |head| {
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let lang = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("accept-language:").map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "none".to_string());
        *seen.lock().expect("lock").entry(path.clone()).or_insert(0) += 1;
        let extra = match path.split('?').next().unwrap_or("") {
            "/nostore" => "cache-control: no-store\r\n",
            "/cookie" => "set-cookie: s=1\r\n",
            "/short" => "cache-control: max-age=1\r\n",
            "/bare" => "",
            "/vary" => "vary: Accept-Language\r\n",
            "/star" => "vary: *\r\n",
            "/slow" => {
                std::thread::sleep(Duration::from_millis(300));
                "cache-control: public\r\n"
            }
            _ => "cache-control: public\r\n",
        };
        let body = if path == "/vary" { format!("lang {lang}") } else { format!("body of {path}") };
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{extra}content-length: {}\r\n\r\n{body}", body.len())
    });
    (addr, hits)
}

#[test]
fn the_cache_serves_fresh_gets_and_heads_and_respects_no_store_cookies_auth_and_max_age() {
    let (addr, hits) = cache_backend();
    let backend = json!({"id": "c", "hostname": "127.0.0.1", "port": addr.port()});
    let mut r = route("cache.test", "ROUND_ROBIN", vec![backend]);
    r["cache"] = json!({"ttlMs": 60000, "maxBytes": 1048576, "maxEntryBytes": 65536});
    let rw = Ringway::start(with_admin(config(vec![r]), None));
    let count = |p: &str| hits.lock().expect("lock").get(p).copied().unwrap_or(0);

    let first = get_with(&rw, "cache.test", "/plain", &[]);
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")), "{}", first.head);
    let second = get_with(&rw, "cache.test", "/plain", &[]);
    assert_eq!((second.status, second.text()), (200, "body of /plain".to_string()), "{}", second.head);
    assert_eq!(second.header("x-cache"), Some("HIT"), "{}", second.head);
    assert!(second.header("age").is_some(), "{}", second.head);
    assert_eq!(second.header("content-type"), Some("text/plain"), "{}", second.head);
    let mut c = Client::connect(rw.addr());
    c.send(b"HEAD /plain HTTP/1.1\r\nHost: cache.test\r\n\r\n");
    let head = c.head_response();
    assert_eq!((head.status, head.header("x-cache")), (200, Some("HIT")), "HEAD from the GET entry: {}", head.head);
    assert_eq!(count("/plain"), 1, "one backend fetch for three answers");

    // Not stored, or not looked up.
    for p in ["/nostore", "/cookie"] {
        for _ in 0..2 {
            assert_eq!(get_with(&rw, "cache.test", p, &[]).status, 200);
        }
        assert_eq!(count(p), 2, "{p} is never stored");
    }
    assert_eq!(get_with(&rw, "cache.test", "/plain", &[("Cache-Control", "no-cache")]).header("x-cache"), Some("MISS"));
    assert_eq!(count("/plain"), 2, "no-cache went to the backend");
    // Authorization: a `public` answer may serve it; one without is
    // never stored for it.
    assert_eq!(get_with(&rw, "cache.test", "/plain", &[("Authorization", "Bearer x")]).header("x-cache"), Some("HIT"));
    for _ in 0..2 {
        let r = get_with(&rw, "cache.test", "/bare", &[("Authorization", "Bearer x")]);
        assert_eq!(r.header("x-cache"), Some("MISS"), "{}", r.head);
    }
    assert_eq!(get_with(&rw, "cache.test", "/bare", &[]).header("x-cache"), Some("MISS"));
    assert_eq!(get_with(&rw, "cache.test", "/bare", &[]).header("x-cache"), Some("HIT"), "the route TTL applies");
    assert_eq!(count("/bare"), 3);

    // max-age=1: fresh, then stale.
    get_with(&rw, "cache.test", "/short", &[]);
    assert_eq!(get_with(&rw, "cache.test", "/short", &[]).header("x-cache"), Some("HIT"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get_with(&rw, "cache.test", "/short", &[]).header("x-cache"), Some("MISS"), "stale after max-age");
    assert_eq!(count("/short"), 2);

    // Counted: 5 hits (GET, HEAD, Authorization, /bare, /short), 11 misses.
    let stats = rw.api().get("/api/v1/stats").expect(200, "stats").json;
    assert_eq!((&stats["cache"]["hits"], &stats["cache"]["misses"]), (&json!(5), &json!(11)), "{}", stats["cache"]);
    assert_eq!(stats["cache"]["entries"], json!(3), "/plain, /bare, /short: {}", stats["cache"]);
    assert!(stats["cache"]["bytes"].as_u64().is_some_and(|b| b > 100), "{}", stats["cache"]);
    let metrics = get(rw.admin_addr(), "127.0.0.1", "/metrics").text();
    assert!(metrics.contains("ringway_cache_hits_total 5"), "{metrics}");
    assert!(metrics.contains("ringway_cache_entries 3"), "{metrics}");
}

fn cache_route(addr: std::net::SocketAddr) -> Value {
    let backend = json!({"id": "c", "hostname": "127.0.0.1", "port": addr.port()});
    let mut r = route("cache.test", "ROUND_ROBIN", vec![backend]);
    r["cache"] = json!({"ttlMs": 60000, "maxBytes": 1048576, "maxEntryBytes": 65536});
    r
}

#[test]
fn the_cache_keys_on_what_vary_names_and_never_stores_vary_star() {
    let (addr, hits) = cache_backend();
    let rw = Ringway::start(config(vec![cache_route(addr)]));
    let count = |p: &str| hits.lock().expect("lock").get(p).copied().unwrap_or(0);
    let lang = |l: Option<&str>| {
        let headers: Vec<(&str, &str)> = l.map(|l| ("Accept-Language", l)).into_iter().collect();
        let r = get_with(&rw, "cache.test", "/vary", &headers);
        (r.header("x-cache").unwrap_or("").to_string(), r.text())
    };
    assert_eq!(lang(Some("en")), ("MISS".into(), "lang en".into()));
    assert_eq!(lang(Some("fr")), ("MISS".into(), "lang fr".into()));
    assert_eq!(lang(Some("en")), ("HIT".into(), "lang en".into()));
    assert_eq!(lang(Some("fr")), ("HIT".into(), "lang fr".into()));
    assert_eq!(lang(None), ("MISS".into(), "lang none".into()), "absent is its own variant");
    assert_eq!(lang(None), ("HIT".into(), "lang none".into()));
    assert_eq!(count("/vary"), 3);
    for _ in 0..2 {
        assert_eq!(get_with(&rw, "cache.test", "/star", &[]).header("x-cache"), Some("MISS"));
    }
    assert_eq!(count("/star"), 2, "Vary: * is never stored");
}

#[test]
fn concurrent_misses_for_one_target_make_one_backend_fetch() {
    let (addr, hits) = cache_backend();
    let rw = Ringway::start(config(vec![cache_route(addr)]));
    let rw_addr = rw.addr();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(move || {
                    let r = get(rw_addr, "cache.test", "/slow");
                    (r.status, r.text())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("client thread")).collect()
    });
    assert!(answers.iter().all(|(s, t)| *s == 200 && t == "body of /slow"), "{answers:?}");
    assert_eq!(hits.lock().expect("lock").get("/slow").copied(), Some(1), "12 concurrent misses, one fetch");
}

#[test]
fn purging_drops_one_path_a_prefix_or_the_whole_route() {
    let (addr, hits) = cache_backend();
    let plain = route("nocache.test", "ROUND_ROBIN", vec![json!({"hostname": "127.0.0.1", "port": addr.port()})]);
    let rw = Ringway::start(with_admin(config(vec![cache_route(addr), plain]), None));
    let count = |p: &str| hits.lock().expect("lock").get(p).copied().unwrap_or(0);
    let fill = |paths: &[&str]| {
        for p in paths {
            get_with(&rw, "cache.test", p, &[]);
        }
    };
    let state = |p: &str| get_with(&rw, "cache.test", p, &[]).header("x-cache").unwrap_or("").to_string();
    fill(&["/a/1", "/a/2", "/b?x=1", "/c"]);
    let purged = rw.api().delete("/api/v1/cache/cache.test?path=/b%3Fx%3D1").expect(200, "purge one").json;
    assert_eq!(purged["purged"], json!(1), "{purged}");
    assert_eq!(state("/b?x=1"), "MISS");
    assert_eq!(state("/c"), "HIT");
    let purged = rw.api().delete("/api/v1/cache/cache.test?path=/a/*").expect(200, "purge a prefix").json;
    assert_eq!(purged["purged"], json!(2), "{purged}");
    assert_eq!((state("/a/1"), state("/a/2"), state("/c")), ("MISS".into(), "MISS".into(), "HIT".into()));
    let purged = rw.api().delete("/api/v1/cache/cache.test").expect(200, "purge the route").json;
    assert_eq!(purged["purged"], json!(4), "/a/1, /a/2, /b?x=1, /c: {purged}");
    assert_eq!(state("/c"), "MISS");
    assert_eq!(count("/c"), 2);
    // Clear answers for what cannot be purged.
    rw.api().delete("/api/v1/cache/nope.test").expect(404, "no such route");
    let r = rw.api().delete("/api/v1/cache/nocache.test").expect(404, "route without a cache");
    assert!(r.json["message"].as_str().is_some_and(|m| m.contains("no cache")), "{:?}", r.json);
    let r = rw.api().delete("/api/v1/cache/cache.test?path=x").expect(400, "path without /");
    assert_eq!(r.field(), Some("path"), "{:?}", r.json);
    rw.api().get("/api/v1/cache/cache.test").expect(405, "GET");
}
