//! Statistics end to end: exact totals after real traffic (the endpoint
//! flushes every worker first), per-route and per-backend views, errors,
//! admission rejections, windows and the Prometheus exposition.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

fn admin_config(routes: Vec<Value>) -> Value {
    with_admin(config(routes), None)
}

/// GET /api/v1/stats, which must answer 200.
fn stats(rw: &Ringway) -> Value {
    rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json
}

/// One admin GET on a fresh connection, the answer unparsed.
fn admin_text(rw: &Ringway, path: &str) -> Response {
    let admin = rw.admin_addr();
    exchange(admin, format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes())
}

/// The entry of `stats["backends"]` for (route, id).
fn backend_entry<'a>(stats: &'a Value, route: &str, id: &str) -> &'a Value {
    stats["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("backends is not an array: {stats}"))
        .iter()
        .find(|b| b["route"] == route && b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {route}/{id} in {}", stats["backends"]))
}

fn num(v: &Value, what: &str) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{what} is not a non-negative integer: {v}"))
}

/// Checks a latencyUs object: p50 <= p90 <= p99 <= max, all integers.
fn check_latency(lat: &Value, what: &str) {
    let p50 = num(&lat["p50"], &format!("{what}.p50"));
    let p90 = num(&lat["p90"], &format!("{what}.p90"));
    let p99 = num(&lat["p99"], &format!("{what}.p99"));
    let max = num(&lat["max"], &format!("{what}.max"));
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{what}: percentiles out of order: {lat}");
}

/// `n` GETs to `host`, mixing fresh connections and two keep-alive ones.
fn send_mix(addr: SocketAddr, host: &str, n: usize) {
    let mut keep = [Client::connect(addr), Client::connect(addr)];
    for i in 0..n {
        let path = format!("/mix-{i}");
        let r = match i % 3 {
            0 => get(addr, host, &path),
            k => keep[k - 1].get(host, &path),
        };
        assert_eq!(r.status, 200, "request {i} to {host}:\n{}{}", r.head, r.text());
    }
}

// ---------------------------------------------------------------------------
// 1. Exact totals across workers
// ---------------------------------------------------------------------------

#[test]
fn totals_are_exact_across_two_workers() {
    const N: usize = 137;
    let a1 = Backend::respond(200, "a1").named("a1").start();
    let a2 = Backend::respond(200, "a2").named("a2").start();
    let rw =
        Ringway::start_workers(admin_config(vec![route("a.test", "ROUND_ROBIN", vec![a1.config(), a2.config()])]), 2);
    send_mix(rw.addr(), "a.test", N);
    for i in 0..5 {
        let r = get(rw.addr(), "unknown.test", &format!("/nowhere-{i}"));
        assert_eq!(r.status, 404, "unknown host, no catch-all:\n{}", r.head);
    }
    assert_eq!(a1.proxied_count() + a2.proxied_count(), N);

    // Immediately: the endpoint flushes every worker before answering.
    let s = stats(&rw);
    assert_eq!(s["requests"]["total"], json!(N + 5), "requests.total: {s}");
    assert_eq!(s["responses"]["2xx"], json!(N), "responses: {}", s["responses"]);
    assert_eq!(s["responses"]["4xx"], json!(5), "responses: {}", s["responses"]);
    assert_eq!(s["responses"]["5xx"], json!(0), "responses: {}", s["responses"]);
    assert_eq!(s["routes"]["a.test"], json!(N), "routes: {}", s["routes"]);
    check_latency(&s["latencyUs"], "latencyUs");

    let backends = s["backends"].as_array().unwrap_or_else(|| panic!("backends is not an array: {s}"));
    assert_eq!(backends.len(), 2, "{}", s["backends"]);
    let mut sum = 0;
    for (id, handle) in [("a1", &a1), ("a2", &a2)] {
        let b = backend_entry(&s, "a.test", id);
        assert_eq!(b["route"], "a.test", "{b}");
        assert_eq!(b["id"], id, "{b}");
        assert_eq!(b["state"], "up", "{b}");
        assert_eq!(b["inFlight"], 0, "{b}");
        assert_eq!(b["errors"], 0, "{b}");
        let n = num(&b["requests"], &format!("{id}.requests"));
        assert_eq!(n as usize, handle.proxied_count(), "{id}: stats vs what the backend saw: {b}");
        check_latency(&b["latencyUs"], &format!("{id}.latencyUs"));
        sum += n;
    }
    assert_eq!(sum, N as u64, "per-backend requests: {}", s["backends"]);

    // One route's view.
    let r = rw.api().get("/api/v1/stats/a.test").expect(200, "GET /api/v1/stats/a.test").json;
    assert_eq!(r["requests"]["total"], json!(N), "{r}");
    assert_eq!(r["responses"]["2xx"], json!(N), "{r}");
    assert_eq!(r["backends"].as_array().map(Vec::len), Some(2), "{r}");
    let r = rw.api().get("/api/v1/stats/unknown.test").expect(404, "GET /api/v1/stats/unknown.test");
    assert_eq!(r.error(), Some("notFound"), "{}", r.json);
}

// ---------------------------------------------------------------------------
// 2. Errors and backend states
// ---------------------------------------------------------------------------

#[test]
fn errors_are_counted_and_maintenance_is_shown() {
    let ok = Backend::respond(200, "m").named("m1").start();
    let ok2 = Backend::respond(200, "m").named("m2").start();
    let dead = json!({"id": "dead", "hostname": "127.0.0.1", "port": refused_port()});
    let rw = Ringway::start_workers(
        admin_config(vec![
            route("dead.test", "ROUND_ROBIN", vec![dead]),
            route("m.test", "ROUND_ROBIN", vec![ok.config(), ok2.config()]),
        ]),
        2,
    );
    let mut got = Vec::new();
    for i in 0..5 {
        let r = get(rw.addr(), "dead.test", &format!("/{i}"));
        got.push(r.status);
    }
    assert!(got.iter().all(|s| *s == 502 || *s == 503), "statuses for the refusing backend: {got:?}");

    let r = rw.api().get("/api/v1/stats/dead.test").expect(200, "GET /api/v1/stats/dead.test").json;
    let e502 = num(&r["errors"]["502"], "errors.502");
    let e503 = num(&r["errors"]["503"], "errors.503");
    assert_eq!(e502 + e503, 5, "errors: {} (clients saw {got:?})", r["errors"]);
    assert_eq!(e502 as usize, got.iter().filter(|s| **s == 502).count(), "errors: {} vs {got:?}", r["errors"]);
    assert_eq!(r["responses"]["5xx"], json!(5), "responses: {}", r["responses"]);
    assert_eq!(r["requests"]["total"], json!(5), "{r}");

    let s = stats(&rw);
    assert_eq!(s["responses"]["5xx"], json!(5), "global responses: {}", s["responses"]);
    assert_eq!(num(&s["errors"]["502"], "502") + num(&s["errors"]["503"], "503"), 5, "{}", s["errors"]);

    // Maintenance shows as such; the other backend stays up.
    rw.api().call("POST", "/api/v1/routes/m.test/backends/m1/dead", &[], None).expect(200, "maintenance on m1");
    let s = stats(&rw);
    assert_eq!(backend_entry(&s, "m.test", "m1")["state"], "maintenance", "{}", s["backends"]);
    assert_eq!(backend_entry(&s, "m.test", "m2")["state"], "up", "{}", s["backends"]);
}

// ---------------------------------------------------------------------------
// 3. Admission rejections
// ---------------------------------------------------------------------------

#[test]
fn admission_rejections_are_counted() {
    let slow = Backend::respond(200, "slow").named("slow").delayed(Duration::from_millis(1000)).start();
    let mut r = route("adm.test", "ROUND_ROBIN", vec![slow.config()]);
    r["reqActiveLength"] = json!(1);
    r["reqQueueLength"] = json!(0);
    // Two workers each admit ceil(1 / 2) = 1: of three concurrent requests
    // at least two land on one worker, so at least one is refused.
    let rw = Ringway::start_workers(admin_config(vec![r]), 2);
    let addr = rw.addr();
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                c.send(format!("GET /{i} HTTP/1.1\r\nHost: adm.test\r\nConnection: close\r\n\r\n").as_bytes());
                c.response().status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(refused >= 1, "no request refused with reqActiveLength 1, reqQueueLength 0: {statuses:?}");

    let s = rw.api().get("/api/v1/stats/adm.test").expect(200, "GET /api/v1/stats/adm.test").json;
    let rejected = num(&s["errors"]["rejected"], "errors.rejected");
    assert!(rejected >= 1, "errors: {}", s["errors"]);
    assert_eq!(rejected as usize, refused, "errors.rejected vs the 503s clients saw {statuses:?}: {}", s["errors"]);
    assert_eq!(s["requests"]["total"], json!(3), "{s}");
    let g = stats(&rw);
    assert_eq!(num(&g["errors"]["rejected"], "global errors.rejected") as usize, refused, "{}", g["errors"]);
}

// ---------------------------------------------------------------------------
// 4. Prometheus exposition
// ---------------------------------------------------------------------------

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

fn is_value(s: &str) -> bool {
    matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok_and(|v| v.is_finite())
}

/// Parses `{name="value",...}` starting at `s[0] == '{'`; returns the rest after `}`.
fn parse_labels(s: &str) -> Result<&str, String> {
    let mut rest = &s[1..];
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok(r);
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        // The value: up to the first unescaped quote; escapes are \\ \" \n only.
        let mut end = None;
        let mut it = rest.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '\\' => match it.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    other => return Err(format!("bad escape {other:?} in a label value")),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                '\n' => return Err("raw newline in a label value".into()),
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// Checks one sample line (`name{labels} value [timestamp]` or `name value [timestamp]`);
/// returns the metric name.
fn check_sample(line: &str) -> Result<&str, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let rest = if line[name_end..].starts_with('{') { parse_labels(&line[name_end..])? } else { &line[name_end..] };
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parts.next().unwrap_or("");
    if !is_value(value) {
        return Err(format!("bad value {value:?}"));
    }
    if let Some(ts) = parts.next() {
        if ts.parse::<i64>().is_err() {
            return Err(format!("bad timestamp {ts:?}"));
        }
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(name)
}

/// Every line of a text exposition must be a HELP/TYPE comment, another
/// comment, or a well-formed sample whose family was declared by a TYPE
/// line. Returns the problems found.
fn check_exposition(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: Vec<(String, String)> = Vec::new();
    if !text.ends_with('\n') {
        problems.push("the exposition does not end with a newline".to_string());
    }
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let words: Vec<&str> = c.trim_start().splitn(3, ' ').collect();
            match words.first() {
                Some(&"TYPE") => {
                    let ok = words.len() == 3
                        && is_name(words[1], true)
                        && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&words[2]);
                    if !ok {
                        problems.push(format!("line {n}: bad TYPE line {line:?}"));
                    } else if types.iter().any(|(t, _)| t == words[1]) {
                        problems.push(format!("line {n}: second TYPE line for {}", words[1]));
                    } else {
                        types.push((words[1].to_string(), words[2].to_string()));
                    }
                }
                Some(&"HELP") if words.len() < 2 || !is_name(words[1], true) => {
                    problems.push(format!("line {n}: bad HELP line {line:?}"));
                }
                _ => {}
            }
            continue;
        }
        match check_sample(line) {
            Err(e) => problems.push(format!("line {n}: {e}: {line:?}")),
            Ok(name) => {
                let declared = types.iter().any(|(t, kind)| {
                    name == t
                        || (kind == "histogram"
                            && [format!("{t}_bucket"), format!("{t}_count"), format!("{t}_sum")]
                                .contains(&name.to_string()))
                });
                if !declared {
                    problems.push(format!("line {n}: sample of {name} without a TYPE line before it"));
                }
            }
        }
    }
    problems
}

#[test]
fn the_exposition_checker_knows_good_from_bad() {
    let good = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\",b=\"\"} 3\n\
                # TYPE g gauge\ng 1.5e3\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n";
    assert_eq!(check_exposition(good), Vec::<String>::new());
    for bad in [
        "# TYPE x counter\nx{a=\"1\"}  3\n",
        "# TYPE x counter\nx{a=1} 3\n",
        "# TYPE x counter\nx 3 4 5\n",
        "# TYPE x counter\n1x 3\n",
        "# TYPE x counter\nx three\n",
        "y 3\n",
        "# TYPE x counter\nx{a=\"1\" 3\n",
    ] {
        assert!(!check_exposition(bad).is_empty(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_are_valid_prometheus_text() {
    const N: usize = 12;
    let a1 = Backend::respond(200, "a1").named("a1").start();
    let a2 = Backend::respond(200, "a2").named("a2").start();
    let rw =
        Ringway::start_workers(admin_config(vec![route("a.test", "ROUND_ROBIN", vec![a1.config(), a2.config()])]), 2);
    send_mix(rw.addr(), "a.test", N);
    let r = admin_text(&rw, "/metrics");
    assert_eq!(r.status, 200, "{}{}", r.head, r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    let text = r.text();

    let want = format!("ringway_requests_total{{route=\"a.test\",class=\"2xx\"}} {N}");
    assert!(text.lines().any(|l| l == want), "no line {want:?} in:\n{text}");
    assert!(
        text.lines().any(|l| l == "# TYPE ringway_request_duration_seconds histogram"),
        "no histogram TYPE line in:\n{text}"
    );
    for id in ["a1", "a2"] {
        let up = format!("ringway_backend_up{{route=\"a.test\",backend=\"{id}\"}} 1");
        assert!(text.lines().any(|l| l == up), "no line {up:?} in:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("ringway_open_connections")), "no ringway_open_connections in:\n{text}");
    let problems = check_exposition(&text);
    assert!(problems.is_empty(), "not valid Prometheus text:\n{}\n---\n{text}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// 5. Windows and percentiles
// ---------------------------------------------------------------------------

#[test]
fn rates_and_latency_have_their_shape() {
    let b = Backend::respond(200, "w").named("w").start();
    let rw = Ringway::start_workers(admin_config(vec![route("w.test", "ROUND_ROBIN", vec![b.config()])]), 2);
    send_mix(rw.addr(), "w.test", 9);
    let t0 = Instant::now();
    let global = stats(&rw);
    let one = rw.api().get("/api/v1/stats/w.test").expect(200, "GET /api/v1/stats/w.test").json;
    assert!(t0.elapsed() < Duration::from_secs(5), "stats took {:?}", t0.elapsed());
    for (what, v) in [("global", &global), ("w.test", &one)] {
        let ps = v["requests"]["perSecond"].as_object().unwrap_or_else(|| panic!("{what}: no perSecond: {v}"));
        for k in ["1s", "10s", "60s"] {
            let x = ps.get(k).and_then(Value::as_f64).unwrap_or_else(|| panic!("{what}: perSecond.{k} missing: {v}"));
            assert!(x >= 0.0 && x.is_finite(), "{what}: perSecond.{k} = {x}");
        }
        // All 9 requests fall within the last 60 s.
        let r60 = ps["60s"].as_f64().unwrap_or(0.0);
        assert!(r60 > 0.0, "{what}: perSecond.60s = {r60} after 9 requests");
        let lat = &v["latencyUs"];
        for k in ["p50", "p90", "p99", "max"] {
            assert!(lat[k].is_u64(), "{what}: latencyUs.{k} missing or not an integer: {lat}");
        }
        check_latency(lat, &format!("{what}.latencyUs"));
        assert!(num(&lat["max"], "max") > 0, "{what}: latencyUs.max is 0 after 9 requests: {lat}");
    }
}
