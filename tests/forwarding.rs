//! Forwarding: bytes, bodies, headers, keep-alive, routing, WebSocket.

mod support;

use support::*;

// ---------------------------------------------------------------- requests

#[test]
fn method_path_and_query_arrive_byte_for_byte() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let cases = [
        ("GET", "/a%2Fb;c=d?a=1&b=%20"),
        ("DELETE", "/x/./y//z?q=%7e&&x"),
        ("PATCH", "/~user/!$&'()*+,;=:@?x=/?y"),
        ("OPTIONS", "/"),
        ("PURGE", "/cache/%E2%82%AC?"),
    ];
    let mut c = Client::connect(rw.addr());
    for (m, t) in cases {
        c.send(format!("{m} {t} HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 200, "{m} {t}");
    }
    let seen = b.requests();
    assert_eq!(seen.len(), cases.len());
    for ((m, t), r) in cases.iter().zip(&seen) {
        assert_eq!((r.method.as_str(), r.target.as_str()), (*m, *t));
        assert!(r.head.starts_with(&format!("{m} {t} HTTP/1.1\r\n")), "request line: {}", r.head);
    }
}

#[test]
fn ten_mib_request_body_arrives_intact() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let body = pattern(10 << 20);
    let mut c = Client::connect(rw.addr());
    c.send(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.text().contains(&format!("body-hash {}\n", hash(&body))), "echo: {}", r.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len());
    assert_eq!(hash(&seen[0].body), hash(&body));
}

#[test]
fn ten_mib_response_body_arrives_intact() {
    let len = 10 << 20;
    let b = Backend::large(len).start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    let r = c.get("x", "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), len);
    assert_eq!(hash(&r.body), hash(&pattern(len)));
    // The connection is still usable afterwards.
    assert_eq!(c.get("x", "/big").body.len(), len);
}

#[test]
fn chunked_request_body_with_extension_and_trailer_arrives_complete() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(
        b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t1\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(String::from_utf8_lossy(&seen[0].body), "hello 0123456789");
    assert_eq!(seen[0].trailers, vec![("X-Trailer".to_string(), "t1".to_string())]);
    // And the next request on the same connection is framed correctly.
    assert_eq!(c.get("x", "/after").status, 200);
    assert_eq!(b.requests()[1].target, "/after");
}

#[test]
fn chunked_response_reaches_http11_client_intact() {
    let b = Backend::chunked(&["alpha-", "beta-", "gamma"]).start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    for _ in 0..3 {
        let r = c.get("x", "/");
        assert_eq!(r.status, 200);
        assert!(r.chunked, "expected chunked framing, head:\n{}", r.head);
        assert_eq!(r.text(), "alpha-beta-gamma");
    }
}

#[test]
fn http10_client_gets_unchunked_response_from_chunked_backend() {
    let b = Backend::chunked(&["alpha-", "beta-", "gamma"]).start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.header("transfer-encoding").is_none(), "head:\n{}", r.head);
    assert!(!r.chunked);
    assert_eq!(r.text(), "alpha-beta-gamma");
}

#[test]
fn head_gets_no_body() {
    let b = Backend::respond(200, "hello").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    // No stray body bytes: the next response parses cleanly.
    let r = c.get("x", "/next");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[test]
fn no_content_and_not_modified_are_framed_without_body() {
    let b204 = Backend::respond(204, "").start();
    let b304 = Backend::respond(304, "would-be").start();
    let cfg = config(vec![
        route("a.test", "ROUND_ROBIN", vec![b204.config()]),
        route("b.test", "ROUND_ROBIN", vec![b304.config()]),
    ]);
    let rw = Ringway::start(cfg);
    let mut c = Client::connect(rw.addr());
    for _ in 0..2 {
        let r = c.get("a.test", "/");
        assert_eq!(r.status, 204);
        assert!(r.header("transfer-encoding").is_none(), "{}", r.head);
        let r = c.get("b.test", "/");
        assert_eq!(r.status, 304);
        assert!(r.header("transfer-encoding").is_none(), "{}", r.head);
    }
    assert_eq!(b204.request_count(), 2);
    assert_eq!(b304.request_count(), 2);
}

// ---------------------------------------------------------------- headers

fn one_request(raw: &str, route_extra: Option<(&str, Value)>) -> SeenRequest {
    let b = Backend::respond(200, "ok").start();
    let mut r = route("*", "ROUND_ROBIN", vec![b.config()]);
    if let Some((k, v)) = route_extra {
        r[k] = v;
    }
    let rw = Ringway::start(config(vec![r]));
    let resp = exchange(rw.addr(), raw.as_bytes());
    assert_eq!(resp.status, 200);
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    seen[0].clone()
}

#[test]
fn x_forwarded_for_is_appended_to_client_value() {
    let r = one_request("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", None);
    assert_eq!(r.all("x-forwarded-for"), vec!["10.0.0.1, 127.0.0.1"], "{}", r.head);
    let r = one_request("GET / HTTP/1.1\r\nHost: x\r\n\r\n", None);
    assert_eq!(r.all("x-forwarded-for"), vec!["127.0.0.1"], "{}", r.head);
}

#[test]
fn x_real_ip_is_set_and_client_value_replaced() {
    let r = one_request("GET / HTTP/1.1\r\nHost: x\r\nX-Real-IP: 6.6.6.6\r\n\r\n", None);
    assert_eq!(r.all("x-real-ip"), vec!["127.0.0.1"], "{}", r.head);
}

#[test]
fn x_forwarded_proto_is_http() {
    let r = one_request("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n", None);
    assert_eq!(r.all("x-forwarded-proto"), vec!["http"], "{}", r.head);
}

#[test]
fn host_is_forwarded_unchanged_with_port() {
    let r = one_request("GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n", None);
    assert_eq!(r.all("host"), vec!["Example.COM:8080"], "{}", r.head);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let r = one_request(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nX-Keep: yes\r\n\r\n",
        None,
    );
    for h in ["x-secret", "keep-alive", "te", "trailer", "proxy-connection"] {
        assert!(r.all(h).is_empty(), "{h} was forwarded:\n{}", r.head);
    }
    for v in r.all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-secret"), "client Connection forwarded:\n{}", r.head);
    }
    assert_eq!(r.all("x-keep"), vec!["yes"]);
}

#[test]
fn route_headers_are_set_replacing_client_values() {
    let r = one_request("GET / HTTP/1.1\r\nHost: x\r\nX-Env: dev\r\n\r\n", Some(("headers", json!({"X-Env": "prod"}))));
    assert_eq!(r.all("x-env"), vec!["prod"], "{}", r.head);
}

#[test]
fn x_request_id_generated_when_absent_and_passed_through_when_present() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.get("x", "/1");
    c.get("x", "/2");
    c.send(b"GET /3 HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n");
    c.response();
    let seen = b.requests();
    let id1 = seen[0].header("x-request-id").expect("generated id");
    let id2 = seen[1].header("x-request-id").expect("generated id");
    assert!(!id1.is_empty() && id1 != id2, "ids {id1:?} {id2:?}");
    assert_eq!(seen[2].all("x-request-id"), vec!["abc-123"]);
}

// ---------------------------------------------------------------- keep-alive

#[test]
fn fifty_sequential_requests_on_one_connection() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    for i in 0..50 {
        let r = c.get("x", &format!("/n/{i}"));
        assert_eq!(r.status, 200);
        assert!(r.text().contains(&format!("target /n/{i}\n")));
    }
}

#[test]
fn upstream_connections_are_pooled_across_client_connections() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    for i in 0..200 {
        let r = get(rw.addr(), "x", &format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(b.request_count(), 200);
    assert!(b.connections() <= 20, "backend accepted {} connections for 200 requests", b.connections());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    for i in 1..=3 {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert!(r.text().contains(&format!("target /{i}\n")), "response {i}: {}", r.text());
    }
}

// ---------------------------------------------------------------- routing

#[test]
fn vhost_exact_beats_wildcard_beats_catch_all() {
    let exact = Backend::respond(200, "exact").start();
    let wild = Backend::respond(200, "wild").start();
    let any = Backend::respond(200, "any").start();
    let rw = Ringway::start(config(vec![
        route("*", "ROUND_ROBIN", vec![any.config()]),
        route("*.example.com", "ROUND_ROBIN", vec![wild.config()]),
        route("a.example.com", "ROUND_ROBIN", vec![exact.config()]),
    ]));
    let cases = [
        ("a.example.com", "exact"),
        ("A.EXAMPLE.COM:8080", "exact"),
        ("a.example.com.", "exact"),
        ("b.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("B.Example.Com:81", "wild"),
        ("example.com", "any"),
        ("other.org", "any"),
    ];
    let mut c = Client::connect(rw.addr());
    for (host, want) in cases {
        let r = c.get(host, "/");
        assert_eq!((r.status, r.text()), (200, want.to_string()), "Host: {host}");
    }
    // absolute-form wins over Host.
    c.send(b"GET http://a.example.com/abs HTTP/1.1\r\nHost: other.org\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text()), (200, "exact".to_string()));
    assert_eq!(exact.requests().last().unwrap().target, "/abs");
}

#[test]
fn unknown_host_without_catch_all_is_404() {
    let wild = Backend::respond(200, "wild").start();
    let rw = Ringway::start(config(vec![route("*.example.com", "ROUND_ROBIN", vec![wild.config()])]));
    let mut c = Client::connect(rw.addr());
    assert_eq!(c.get("example.com", "/").status, 404, "wildcard must not match the apex");
    assert_eq!(get(rw.addr(), "other.org", "/").status, 404);
    assert_eq!(wild.request_count(), 0);
    assert_eq!(get(rw.addr(), "z.example.com", "/").status, 200);
}

#[test]
fn path_prefix_longest_match_with_strip_prefix() {
    let def = Backend::respond(200, "default").named("default").start();
    let api = Backend::respond(200, "api").named("api").start();
    let v2 = Backend::respond(200, "v2").named("v2").start();
    let mut r = route("*", "ROUND_ROBIN", vec![def.config()]);
    r["paths"] = json!([
        {"prefix": "/api", "stripPrefix": true, "backends": [api.config()]},
        {"prefix": "/api/v2", "backends": [v2.config()]},
    ]);
    let rw = Ringway::start(config(vec![r]));
    let cases = [
        ("/api/x?q", "api", "/x?q"),
        ("/api", "api", "/"),
        ("/api?q=1", "api", "/?q=1"),
        ("/api/", "api", "/"),
        ("/apix", "default", "/apix"),
        ("/api/v2/users", "v2", "/api/v2/users"),
        ("/api/v2x", "api", "/v2x"),
        ("/", "default", "/"),
    ];
    let mut c = Client::connect(rw.addr());
    for (path, want, _) in cases {
        let resp = c.get("x", path);
        assert_eq!((resp.status, resp.text()), (200, want.to_string()), "path {path}");
    }
    let backends = [&def, &api, &v2];
    let mut seen: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for b in backends {
        seen.insert(b.name(), b.requests().into_iter().map(|r| r.target).collect::<Vec<_>>());
    }
    let mut idx: std::collections::HashMap<&str, usize> = Default::default();
    for (path, want, target) in cases {
        let i = idx.entry(want).or_default();
        assert_eq!(seen[want][*i], target, "{path} forwarded as");
        *i += 1;
    }
}

// ---------------------------------------------------------------- websocket

#[test]
fn websocket_upgrade_tunnels_bytes_both_ways() {
    let b = Backend::websocket().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 101, "{}", r.head);
    assert!(r.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")), "{}", r.head);
    assert!(r.header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")), "{}", r.head);
    for msg in [&b"ping-123"[..], b"\x81\x05hello", &[0u8, 1, 2, 255, 254][..]] {
        c.send(msg);
        assert_eq!(c.read_exact_bytes(msg.len()), msg);
    }
    let seen = b.requests();
    assert_eq!(seen[0].header("upgrade").as_deref(), Some("websocket"));
    assert!(seen[0].header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
}

#[test]
fn an_error_on_a_keep_alive_connection_is_answered_once() {
    // Regression: a 404 (or an admission 503) kept the connection open but
    // left the request in the buffer, so it was answered again and again.
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(config(vec![route("known.example", "ROUND_ROBIN", vec![b.config()])]));
    let mut c = Client::connect(rw.addr());
    assert_eq!(c.get("unknown.example", "/").status, 404);
    let r = c.get("known.example", "/");
    assert_eq!((r.status, r.text()), (200, "ok".to_string()), "the next request on the connection");
    assert_eq!(c.get("unknown.example", "/again").status, 404);
    assert_eq!(c.get("known.example", "/").status, 200);
}

#[test]
fn an_admission_refusal_keeps_the_connection_usable() {
    let slow = Backend::respond(200, "slow").delayed(std::time::Duration::from_millis(400)).start();
    let mut cfg = config(vec![route("q.example", "ROUND_ROBIN", vec![slow.config()])]);
    cfg["routes"][0]["reqActiveLength"] = json!(1);
    cfg["routes"][0]["reqQueueLength"] = json!(0);
    let rw = Ringway::start_workers(cfg, 1);
    let addr = rw.addr();
    let first = std::thread::spawn(move || get(addr, "q.example", "/first").status);
    slow.wait_for_requests(1, std::time::Duration::from_secs(5));
    let mut c = Client::connect(rw.addr());
    assert_eq!(c.get("q.example", "/refused").status, 503);
    assert_eq!(first.join().unwrap(), 200);
    let r = c.get("q.example", "/after");
    assert_eq!((r.status, r.text()), (200, "slow".to_string()), "the same connection serves the next request");
}
