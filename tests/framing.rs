//! Malformed and ambiguous requests: each gets the stated status, the
//! connection is closed, and the backend sees nothing.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Sends `raw` to a ringway configured by `tweak`, expects `status`, a
/// closed connection, and no request at the backend.
fn rejects_with(tweak: impl FnOnce(Value) -> Value, raw: &[u8], status: u16) {
    let b = Backend::respond(200, "should not be reached").start();
    let rw = Ringway::start(tweak(catch_all("ROUND_ROBIN", &[&b])));
    let mut c = Client::connect(rw.addr());
    // The peer may stop reading early; a failed write still leaves a response to read.
    let _ = c.try_send(raw);
    let r = c.read_response(false).unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
    assert_eq!(r.status, status, "for request {:?}; head:\n{}", String::from_utf8_lossy(raw), r.head);
    assert!(c.closed_within(Duration::from_secs(3)), "connection left open after {status}");
    assert_eq!(b.request_count(), 0, "the backend saw: {:?}", b.requests().first().map(|r| r.head.clone()));
}

fn rejects(raw: &[u8], status: u16) {
    rejects_with(|c| c, raw, status);
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn duplicate_content_length_same_value_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400);
}

#[test]
fn content_length_with_plus_sign_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400);
}

#[test]
fn negative_content_length_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400);
}

#[test]
fn content_length_list_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\nh", 400);
}

#[test]
fn content_length_with_inner_space_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 5\r\n\r\nhello", 400);
}

#[test]
fn overflowing_content_length_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
}

#[test]
fn transfer_encoding_chunked_then_identity_is_400() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn transfer_encoding_in_http10_is_400() {
    rejects(b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn gzip_chunked_is_501() {
    rejects(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
}

fn bad_chunk_size(size: &str) {
    let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n");
    rejects(raw.as_bytes(), 400);
}

#[test]
fn chunk_size_with_plus_sign_is_400() {
    bad_chunk_size("+5");
}

#[test]
fn chunk_size_with_0x_prefix_is_400() {
    bad_chunk_size("0x5");
}

#[test]
fn overflowing_chunk_size_is_400() {
    bad_chunk_size("fffffffffffffffffff");
}

#[test]
fn non_hex_chunk_size_is_400() {
    bad_chunk_size("zz");
}

#[test]
fn obs_fold_is_400() {
    rejects(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n", 400);
}

#[test]
fn nul_in_header_value_is_400() {
    rejects(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400);
}

#[test]
fn bare_cr_in_header_value_is_400() {
    rejects(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400);
}

#[test]
fn space_before_colon_is_400() {
    rejects(b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400);
}

#[test]
fn garbage_request_line_is_400() {
    rejects(b"HELLO THERE\r\n\r\n", 400);
}

#[test]
fn http11_without_host_is_400() {
    rejects(b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400);
}

#[test]
fn two_host_headers_are_400() {
    rejects(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400);
}

fn max_head_4096(cfg: Value) -> Value {
    set(cfg, "limits", "maxHeadBytes", json!(4096))
}

#[test]
fn request_line_over_max_head_bytes_is_414() {
    let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    rejects_with(max_head_4096, raw.as_bytes(), 414);
}

#[test]
fn too_many_headers_is_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..12 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    rejects_with(|c| set(c, "limits", "maxHeaders", json!(10)), raw.as_bytes(), 431);
}

#[test]
fn huge_header_is_431() {
    let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(6000));
    rejects_with(max_head_4096, raw.as_bytes(), 431);
}

fn max_body_1000(cfg: Value) -> Value {
    set(cfg, "limits", "maxBodyBytes", json!(1000))
}

#[test]
fn content_length_over_max_body_is_413() {
    rejects_with(max_body_1000, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 413);
}

#[test]
fn chunked_body_over_max_body_is_413() {
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
        "c".repeat(2000)
    );
    rejects_with(max_body_1000, raw.as_bytes(), 413);
}

#[test]
fn connect_is_405() {
    rejects(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405);
}

#[test]
fn stalled_head_gets_408_then_close() {
    let b = Backend::respond(200, "no").start();
    let rw = Ringway::start(set(catch_all("ROUND_ROBIN", &[&b]), "timeouts", "clientHeadMs", json!(500)));
    let mut c = Client::connect(rw.addr());
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ");
    let r = c.response();
    let took = t0.elapsed();
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "408 after {took:?}");
    assert!(c.closed_within(Duration::from_secs(3)), "connection left open after 408");
    assert_eq!(b.request_count(), 0);
}

#[test]
fn valid_request_still_passes_with_same_fixture() {
    // Guards the fixture: the same path with a well-formed request reaches the backend.
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(catch_all("ROUND_ROBIN", &[&b]));
    let r = exchange(rw.addr(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_eq!(r.status, 200);
    assert_eq!(b.requests()[0].body, b"hello");
}
