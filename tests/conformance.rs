//! HTTP/1.0 and framing conformance at the edges (issue 11): no 1xx to an
//! HTTP/1.0 client, HTTP/1.0 keep-alive honoured, absurd chunk sizes
//! refused at once.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn an_http10_client_never_gets_100_continue() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    // Head first, body later: a 1.1 client would get 100 Continue here.
    c.send(b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"hello");
    let r = c.response();
    assert_eq!(r.status, 200, "the first answer is the final one, not 100:\n{}", r.head);
    assert!(r.text().contains("body-len 5"), "{}", r.text());
}

#[test]
fn an_http11_client_still_gets_100_continue() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 100, "{}", r.head);
}

#[test]
fn http10_keep_alive_is_honoured_and_plain_http10_closes() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let mut c = Client::connect(rw.addr());
    for i in 0..3 {
        c.send(format!("GET /{i} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {i}:\n{}", r.head);
        assert_eq!(r.text(), "ok");
    }
    // An error answer keeps it too (the request had no body).
    let b2 = Backend::respond(200, "ok").start();
    let rw2 = Ringway::start(config(vec![route("only.test", "ROUND_ROBIN", vec![b2.config()])]));
    let mut c = Client::connect(rw2.addr());
    c.send(b"GET / HTTP/1.0\r\nHost: nowhere.test\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    c.send(b"GET /last HTTP/1.0\r\nHost: only.test\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().status, 200, "still open after the error answer");

    let mut c = Client::connect(rw.addr());
    c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(c.closed_within(Duration::from_secs(2)), "HTTP/1.0 without keep-alive must close");
}

#[test]
fn an_absurd_chunk_size_is_refused_at_once() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    for size in ["10000000001", "ffffffffffffffff"] {
        let mut c = Client::connect(rw.addr());
        let t = Instant::now();
        c.send(format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 413, "chunk size {size}:\n{}", r.head);
        assert!(t.elapsed() < Duration::from_secs(2), "answered after {:?}", t.elapsed());
    }
    assert_eq!(b.request_count(), 0, "nothing reaches the backend");
}

#[test]
fn a_later_http1_minor_version_is_served_as_11() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let r = exchange(rw.addr(), b"GET /v HTTP/1.2\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.head.starts_with("HTTP/1.1 "), "{}", r.head);
    let seen = b.requests();
    assert!(seen.iter().any(|s| s.target == "/v"), "the backend got it");
    // Not HTTP/1.x: still refused.
    for line in ["GET / HTTP/2.0", "GET / HTTP/1.10", "GET / HTTP/3"] {
        let r = exchange(rw.addr(), format!("{line}\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{line}: {}", r.head);
    }
}

#[test]
fn a_refused_upload_gets_its_answer_even_when_the_client_sends_everything_first() {
    use std::io::{Read, Write};
    let b = Backend::echo().start();
    let mut r = route("*", "ROUND_ROBIN", vec![b.config()]);
    r["maxBodyBytes"] = json!(1024);
    let rw = Ringway::start(config(vec![r]));
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(rw.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let len = 4 << 20;
        s.write_all(format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes()).unwrap();
        // The client sends its whole body before it reads (as simple
        // clients do): the 413 is written long before it looks.
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len && s.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the answer was lost: {e} (read so far: {:?})", String::from_utf8_lossy(&got)),
            }
        }
        assert!(got.starts_with(b"HTTP/1.1 413"), "{:?}", String::from_utf8_lossy(&got));
    }
    assert_eq!(b.request_count(), 0);
}

/// Whether `raw` is canonical chunked framing: sizes in lowercase hex
/// without leading zeros or extensions, CRLF everywhere, ending in `0`.
fn canonical_chunked(raw: &[u8]) -> bool {
    let mut i = 0;
    loop {
        let Some(eol) = raw[i..].windows(2).position(|w| w == b"\r\n") else { return false };
        let size = &raw[i..i + eol];
        let ok_size = size == b"0"
            || (!size.is_empty() && size[0] != b'0' && size.iter().all(|b| b"0123456789abcdef".contains(b)));
        if !ok_size {
            return false;
        }
        let n = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        i += eol + 2;
        if n == 0 {
            return true;
        }
        if raw.len() < i + n + 2 || &raw[i + n..i + n + 2] != b"\r\n" {
            return false;
        }
        i += n + 2;
    }
}

#[test]
fn chunked_bodies_reach_the_backend_reframed_canonically() {
    let b = Backend::echo().start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    // Held whole: extensions, leading zeros, upper-case hex, and trailers
    // that name framing and routing fields.
    let mut c = Client::connect(rw.addr());
    c.send(
        b"POST /held HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n0001\r\n \r\nA\r\n0123456789\r\n0\r\n\
          X-Trailer: t1\r\nHost: evil.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let seen = &b.requests()[0];
    assert_eq!(
        String::from_utf8_lossy(&seen.raw_body),
        "5\r\nhello\r\n1\r\n \r\na\r\n0123456789\r\n0\r\nX-Trailer: t1\r\n\r\n",
        "exact bytes the backend received"
    );

    // Streamed in pieces after the head: canonical too, same payload.
    let mut c = Client::connect(rw.addr());
    c.send(b"POST /streamed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in [&b"00003;x=y\r\nabc\r\n"[..], b"0A\r\n0123456789\r\n", b"0\r\nHost: evil.test\r\n\r\n"] {
        std::thread::sleep(Duration::from_millis(30));
        c.send(piece);
    }
    assert_eq!(c.response().status, 200);
    let seen = b.requests().into_iter().find(|r| r.target == "/streamed").expect("streamed request");
    assert_eq!(seen.body, b"abc0123456789");
    assert!(canonical_chunked(&seen.raw_body), "{:?}", String::from_utf8_lossy(&seen.raw_body));
    assert!(seen.trailers.is_empty(), "a Host trailer must not be forwarded: {:?}", seen.trailers);
}

#[test]
fn an_http10_request_without_host_reaches_the_backend_with_the_backends_name() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let r = exchange(rw.addr(), b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = b.requests().into_iter().find(|s| s.target == "/old").expect("forwarded");
    assert_eq!(seen.header("host"), Some(format!("127.0.0.1:{}", b.port())), "{}", seen.head);
    assert!(seen.header("x-forwarded-host").is_none(), "{}", seen.head);
}

/// A backend that answers one connection with exactly `response`, then closes.
fn raw_backend(response: &'static [u8]) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = s.write_all(response);
    });
    (addr, t)
}

#[test]
fn chunked_responses_reach_the_client_in_canonical_framing() {
    let (addr, t) = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=\"v\"\r\nhello\r\n000000000000000000000000000006\r\n world\r\nA\r\n0123456789\r\n\
          00\r\nX-Check: t1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let rw = Ringway::start(config(vec![route(
        "x",
        "ROUND_ROBIN",
        vec![serde_json::json!({"hostname": "127.0.0.1", "port": addr.port()})],
    )]));
    let mut s = std::net::TcpStream::connect(rw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let _ = t.join();
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        body, "5\r\nhello\r\n6\r\n world\r\na\r\n0123456789\r\n0\r\nX-Check: t1\r\n\r\n",
        "exact bytes the client received"
    );
}
