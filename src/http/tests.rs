use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn lim() -> HeadLimits {
    HeadLimits { max_head_bytes: 8192, max_headers: 64 }
}

/// 200 = parsed, 0 = incomplete, otherwise the error status.
fn req_status_with(raw: &[u8], l: &HeadLimits) -> u16 {
    let mut h = Vec::new();
    match parse_request(raw, l, &mut h) {
        Ok(Some(_)) => 200,
        Ok(None) => 0,
        Err(e) => e.status(),
    }
}

fn req_status(raw: &[u8]) -> u16 {
    req_status_with(raw, &lim())
}

fn parse_ok(raw: &[u8]) -> (RequestHead, Vec<HeaderSpan>) {
    let mut h = Vec::new();
    match parse_request(raw, &lim(), &mut h) {
        Ok(Some(r)) => (r, h),
        other => panic!("expected a parsed request, got {:?}", other),
    }
}

fn s(buf: &[u8], sp: Span) -> &str {
    std::str::from_utf8(slice(buf, sp)).unwrap()
}

// ---------------------------------------------------------------------------
// Request rule table
// ---------------------------------------------------------------------------

#[test]
fn request_rule_table() {
    let long_line = {
        let mut v = b"GET /".to_vec();
        v.resize(9000, b'a');
        v
    };
    let cases: &[(&str, &[u8], u16)] = &[
        // positives
        ("get_with_query", b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n", 200),
        ("post_with_cl", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 200),
        ("cl_zero", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 200),
        ("cl_leading_zeros_ok", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", 200),
        ("cl_u64_max_ok", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", 200),
        ("chunked_ok", b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
        ("chunked_mixed_case_ok", b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", 200),
        ("http10_no_host_ok", b"GET / HTTP/1.0\r\n\r\n", 200),
        ("absolute_form_without_host_ok", b"GET http://example.com/x HTTP/1.1\r\n\r\n", 200),
        ("ipv6_host_ok", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200),
        ("host_with_port_ok", b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 200),
        ("options_asterisk_ok", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("connect_authority_ok", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 200),
        ("htab_in_value_ok", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n", 200),
        ("obs_text_in_value_ok", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", 200),
        ("leading_crlf_ok", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("other_method_ok", b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ("incomplete", b"GET / HTTP/1.1\r\nHost: a\r\n", 0),
        ("incomplete_request_line", b"GET /abc", 0),
        // Content-Length / Transfer-Encoding
        ("cl_and_te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("te_and_cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        ("dup_cl_equal", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
        ("dup_cl_different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("cl_empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("cl_plus_sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
        ("cl_minus_sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n", 400),
        ("cl_space_inside", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400),
        ("cl_comma_list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400),
        ("cl_non_digit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\n", 400),
        ("cl_hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("cl_overflow", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
        ("te_identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        ("te_chunked_identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        ("te_in_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (
            "te_dup_headers_chunked_twice",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "te_dup_headers_last_not_chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            "te_dup_headers_gzip_then_chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        ("te_gzip_chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("te_identity_chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501),
        ("te_chunked_chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("te_empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        ("te_only_commas", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , ,\r\n\r\n", 400),
        ("te_chunked_with_params", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400),
        ("te_invalid_token", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
        ("te_chunked_suffix", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
        // header syntax
        ("obs_fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
        ("obs_fold_tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
        ("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
        ("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", 400),
        ("ctl_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400),
        ("del_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400),
        ("esc_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[31m\r\n\r\n", 400),
        ("space_before_colon", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n", 400),
        ("tab_before_colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400),
        ("non_token_header_name", b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400),
        ("nul_in_header_name", b"GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", 400),
        ("empty_header_name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
        ("header_without_colon", b"GET / HTTP/1.1\r\nHost: a\r\nXA\r\n\r\n", 400),
        // request line
        ("double_space_request_line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("http2_version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        ("lowercase_version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("missing_version", b"GET /\r\nHost: a\r\n\r\n", 400),
        ("trailing_garbage_request_line", b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400),
        ("bad_method_char", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("nul_in_target", b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("fragment_in_target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("obs_text_in_target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // Host
        ("missing_host_http11", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("duplicate_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        ("empty_host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("host_with_tab", b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 400),
        ("host_with_userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        ("host_with_slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("host_bad_port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
        ("host_long_port", b"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", 400),
        ("host_unclosed_ipv6", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        ("host_bad_pct", b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400),
        // request-target forms
        ("asterisk_not_options", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("authority_form_not_connect", b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("connect_without_port", b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("relative_target", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("unsupported_scheme", b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("absolute_empty_authority", b"GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("absolute_userinfo", b"GET http://u:p@a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // size limits
        ("uri_too_long", &long_line, 414),
    ];
    let mut failures = Vec::new();
    for (name, raw, want) in cases {
        let got = req_status(raw);
        if got != *want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn error_status_and_reason() {
    assert_eq!(ParseError::BadRequest("x").status(), 400);
    assert_eq!(ParseError::BadRequest("x").reason(), "x");
    assert_eq!(ParseError::UriTooLong.status(), 414);
    assert_eq!(ParseError::HeaderTooLarge.status(), 431);
    assert_eq!(ParseError::NotImplemented("y").status(), 501);
    let mut h = Vec::new();
    let e =
        parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", &lim(), &mut h)
            .unwrap_err();
    assert_eq!(e, ParseError::BadRequest("duplicate Content-Length"));
}

#[test]
fn head_too_large_is_431() {
    let l = HeadLimits { max_head_bytes: 256, max_headers: 64 };
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    raw.resize(300, b'x');
    assert_eq!(req_status_with(&raw, &l), 431);
    // Complete head, but larger than the limit: still 431.
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(req_status_with(&raw, &l), 431);
    // Under the limit but incomplete: need more bytes.
    assert_eq!(req_status_with(&raw[..200], &l), 0);
    // Request line alone longer than the limit: 414.
    let mut line = b"GET /".to_vec();
    line.resize(256, b'a');
    assert_eq!(req_status_with(&line, &l), 414);
    let mut line2 = line.clone();
    line2.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(req_status_with(&line2, &l), 414);
}

#[test]
fn too_many_headers_is_431() {
    let l = HeadLimits { max_head_bytes: 8192, max_headers: 4 };
    let ok = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(req_status_with(ok, &l), 200);
    let bad = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(req_status_with(bad, &l), 431);
    let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n";
    assert_eq!(req_status_with(many, &l), 431);
    // max_headers above the cap is clamped, not a panic.
    let huge = HeadLimits { max_head_bytes: 8192, max_headers: 10_000 };
    assert_eq!(req_status_with(ok, &huge), 200);
}

// ---------------------------------------------------------------------------
// Request positives in detail
// ---------------------------------------------------------------------------

#[test]
fn get_with_query_spans() {
    let raw = b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let (r, h) = parse_ok(raw);
    assert_eq!(r.head_len, raw.len());
    assert_eq!(r.method, Method::Get);
    assert_eq!(s(raw, r.method_span), "GET");
    assert_eq!(s(raw, r.target), "/a/b?x=1");
    assert_eq!(s(raw, r.path), "/a/b?x=1");
    assert!(!r.path_missing_slash);
    assert_eq!(r.version_minor, 1);
    assert_eq!(s(raw, r.host.unwrap()), "example.com");
    assert!(!r.host_from_target);
    assert_eq!(r.body, BodyKind::None);
    assert!(r.keep_alive);
    assert!(!r.upgrade_websocket);
    assert!(!r.expect_continue);
    assert_eq!(h.len(), 2);
    assert_eq!(s(raw, h[1].name), "Accept");
    assert_eq!(s(raw, h[1].value), "*/*");
}

#[test]
fn body_kinds() {
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.body, BodyKind::Length(3));
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.body, BodyKind::Length(0));
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n");
    assert_eq!(r.body, BodyKind::Length(7));
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(r.body, BodyKind::Chunked);
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked,\r\n\r\n");
    assert_eq!(r.body, BodyKind::Chunked);
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body, BodyKind::None);
}

#[test]
fn pipelined_requests() {
    let raw = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    let (r1, _) = parse_ok(raw);
    assert_eq!(s(raw, r1.path), "/1");
    let rest = &raw[r1.head_len..];
    let (r2, _) = parse_ok(rest);
    assert_eq!(s(rest, r2.path), "/2");
    assert_eq!(r2.body, BodyKind::Length(2));
    let rest2 = &rest[r2.head_len + 2..];
    let (r3, _) = parse_ok(rest2);
    assert_eq!(s(rest2, r3.path), "/3");
    assert_eq!(r3.head_len, rest2.len());
}

#[test]
fn absolute_form_host_from_uri() {
    let raw = b"GET http://example.com:8080/x/y?z=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(s(raw, r.host.unwrap()), "example.com:8080");
    assert!(r.host_from_target);
    assert_eq!(s(raw, r.path), "/x/y?z=1");
    assert_eq!(s(raw, r.target), "http://example.com:8080/x/y?z=1");

    let raw = b"GET HTTP://Example.com HTTP/1.1\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(s(raw, r.host.unwrap()), "Example.com");
    assert_eq!(s(raw, r.path), "");
    assert!(r.path_missing_slash);

    let raw = b"GET https://a?q=1 HTTP/1.1\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(s(raw, r.path), "?q=1");
    assert!(r.path_missing_slash);
}

#[test]
fn ipv6_host() {
    let raw = b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(s(raw, r.host.unwrap()), "[::1]:8080");
    let raw = b"GET http://[2001:db8::1]/ HTTP/1.1\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(s(raw, r.host.unwrap()), "[2001:db8::1]");
}

#[test]
fn connect_and_options() {
    let (r, _) = parse_ok(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(r.method, Method::Connect);
    let raw = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    let (r, _) = parse_ok(raw);
    assert_eq!(r.method, Method::Options);
    assert_eq!(s(raw, r.path), "*");
}

#[test]
fn keep_alive_matrix() {
    let ka = |raw: &[u8]| parse_ok(raw).0.keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
}

#[test]
fn upgrade_and_expect_flags() {
    let (r, _) =
        parse_ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n");
    assert!(r.upgrade_websocket);
    assert_eq!(r.connection_tokens, 0);
    let (r, _) = parse_ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert!(!r.upgrade_websocket, "needs Connection: upgrade");
    let (r, _) = parse_ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n");
    assert!(!r.upgrade_websocket);
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(r.expect_continue);
    let (r, _) = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\nContent-Length: 1\r\n\r\n");
    assert!(!r.expect_continue);
}

#[test]
fn method_helpers() {
    for (m, idem) in [
        (Method::Get, true),
        (Method::Head, true),
        (Method::Put, true),
        (Method::Delete, true),
        (Method::Options, true),
        (Method::Trace, true),
        (Method::Post, false),
        (Method::Patch, false),
        (Method::Connect, false),
        (Method::Other, false),
    ] {
        assert_eq!(m.is_idempotent(), idem, "{m:?}");
    }
    assert_eq!(Method::from_bytes(b"get"), Method::Other);
    assert_eq!(Method::from_bytes(b"PATCH"), Method::Patch);
}

#[test]
fn headers_vec_is_reused() {
    let mut h = Vec::with_capacity(16);
    let cap = h.capacity();
    for _ in 0..3 {
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nA: b\r\n\r\n", &lim(), &mut h);
        assert!(matches!(r, Ok(Some(_))));
        assert_eq!(h.len(), 2);
    }
    assert_eq!(h.capacity(), cap);
}

#[test]
fn incremental_request_bytes() {
    let raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
    for n in 0..raw.len() {
        assert_eq!(req_status(&raw[..n]), 0, "prefix {n}");
    }
    assert_eq!(req_status(raw), 200);
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn resp(raw: &[u8], m: Method) -> Result<Option<ResponseHead>, ParseError> {
    let mut h = Vec::new();
    parse_response(raw, &lim(), m, &mut h)
}

fn resp_ok(raw: &[u8], m: Method) -> ResponseHead {
    match resp(raw, m) {
        Ok(Some(r)) => r,
        other => panic!("expected response, got {other:?}"),
    }
}

#[test]
fn response_cases() {
    let r = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Method::Get);
    assert_eq!((r.status, r.body, r.keep_alive), (200, BodyKind::Length(5), true));
    assert_eq!(r.head_len, 38);

    let r = resp_ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Get);
    assert_eq!((r.body, r.keep_alive), (BodyKind::Chunked, true));

    let r = resp_ok(b"HTTP/1.1 200 OK\r\n\r\n", Method::Get);
    assert_eq!((r.body, r.keep_alive), (BodyKind::UntilClose, false));

    let r = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", Method::Head);
    assert_eq!(r.body, BodyKind::None);
    assert_eq!(r.content_length, Some(100));
    assert!(r.keep_alive);

    let r = resp_ok(b"HTTP/1.1 204 No Content\r\n\r\n", Method::Get);
    assert_eq!((r.body, r.keep_alive), (BodyKind::None, true));
    let r = resp_ok(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Method::Get);
    assert_eq!(r.body, BodyKind::None);

    // CL + TE: chunked wins, never reuse the connection.
    let r = resp_ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::Get);
    assert_eq!((r.body, r.keep_alive), (BodyKind::Chunked, false));

    // TE whose final coding is not chunked: read until close.
    let r = resp_ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::Get);
    assert_eq!((r.body, r.keep_alive), (BodyKind::UntilClose, false));
    let r = resp_ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::Get);
    assert_eq!(r.body, BodyKind::Chunked);

    // Tolerated: identical repeated CL, spaces before colon, reason with spaces.
    let raw = b"HTTP/1.1 200  All Good\r\nContent-Length: 3\r\nContent-Length : 3, 3\r\n\r\n";
    let r = resp_ok(raw, Method::Get);
    assert_eq!(r.body, BodyKind::Length(3));
    assert_eq!(s(raw, r.reason), "All Good");

    // HTTP/1.0 defaults.
    let r = resp_ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", Method::Get);
    assert_eq!((r.version_minor, r.keep_alive), (0, false));
    let r = resp_ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", Method::Get);
    assert!(r.keep_alive);
    let r = resp_ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", Method::Get);
    assert!(!r.keep_alive);

    // Empty reason phrase.
    let r = resp_ok(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", Method::Get);
    assert_eq!(r.reason.0, r.reason.1);

    assert!(matches!(resp(b"HTTP/1.1 200 OK\r\nContent-Le", Method::Get), Ok(None)));
}

#[test]
fn response_100_continue_then_200() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let r = resp_ok(raw, Method::Post);
    assert_eq!((r.status, r.body), (100, BodyKind::None));
    assert_eq!(r.head_len, 25);
    let r2 = resp_ok(&raw[r.head_len..], Method::Post);
    assert_eq!((r2.status, r2.body), (200, BodyKind::Length(2)));
    let r =
        resp_ok(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", Method::Get);
    assert_eq!((r.status, r.body), (101, BodyKind::None));
}

#[test]
fn response_errors() {
    let bad: &[(&str, &[u8])] = &[
        ("two_digit_status", b"HTTP/1.1 20 OK\r\n\r\n"),
        ("four_digit_status", b"HTTP/1.1 2000 OK\r\n\r\n"),
        ("status_below_100", b"HTTP/1.1 099 Hm\r\n\r\n"),
        ("http2_status_line", b"HTTP/2 200 OK\r\n\r\n"),
        ("garbage_status_line", b"FOO 200 OK\r\n\r\n"),
        ("no_version", b"200 OK\r\n\r\n"),
        ("bad_cl", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"),
        ("cl_plus", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
        ("cl_empty", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"),
        ("conflicting_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        ("conflicting_cl_list", b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n"),
        ("chunked_twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        ("obs_fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ("nul_in_value", b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
    ];
    for (name, raw) in bad {
        assert!(resp(raw, Method::Get).is_err(), "{name} should be rejected");
    }
    let l = HeadLimits { max_head_bytes: 64, max_headers: 8 };
    let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    raw.resize(100, b'a');
    let mut h = Vec::new();
    assert_eq!(parse_response(&raw, &l, Method::Get, &mut h), Err(ParseError::HeaderTooLarge));
}

// ---------------------------------------------------------------------------
// Chunked decoder
// ---------------------------------------------------------------------------

/// Outcome of decoding: payload, consumed, done, or the error.
fn decode_whole(input: &[u8], max: u64) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new(max);
    let mut out = Vec::new();
    let (n, done) = d.feed(input, &mut |b: &[u8]| out.extend_from_slice(b))?;
    assert_eq!(done, d.is_done());
    assert_eq!(d.payload_len(), out.len() as u64);
    Ok((out, n, done))
}

fn decode_bytewise(input: &[u8], max: u64) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new(max);
    let mut out = Vec::new();
    let mut consumed = 0;
    for i in 0..input.len() {
        let (n, done) = d.feed(&input[i..i + 1], &mut |b: &[u8]| out.extend_from_slice(b))?;
        consumed += n;
        if done {
            return Ok((out, consumed, true));
        }
        assert_eq!(n, 1);
    }
    Ok((out, consumed, d.is_done()))
}

enum Want {
    Ok(&'static [u8], bool),
    Malformed,
    TooLarge,
}

#[test]
fn chunked_table_whole_and_bytewise() {
    let cases: &[(&str, &[u8], u64, Want)] = &[
        ("simple", b"5\r\nhello\r\n0\r\n\r\n", 0, Want::Ok(b"hello", true)),
        ("two_chunks", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, Want::Ok(b"abcde", true)),
        (
            "hex_upper_lower",
            b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
            0,
            Want::Ok(b"01234567890123456789", true),
        ),
        ("leading_zeros", b"0005\r\nhello\r\n000\r\n\r\n", 0, Want::Ok(b"hello", true)),
        ("extensions", b"5;foo=bar;baz\r\nhello\r\n0;last=\"q\\\"x\"\r\n\r\n", 0, Want::Ok(b"hello", true)),
        ("ext_bws_before_semicolon", b"5 ;foo = bar\r\nhello\r\n0\t; x\r\n\r\n", 0, Want::Ok(b"hello", true)),
        ("trailers", b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-B:\r\n\r\n", 0, Want::Ok(b"hello", true)),
        ("empty_body", b"0\r\n\r\n", 0, Want::Ok(b"", true)),
        ("incomplete_data", b"5\r\nhel", 0, Want::Ok(b"hel", false)),
        ("incomplete_trailers", b"5\r\nhello\r\n0\r\nX: y\r\n", 0, Want::Ok(b"hello", false)),
        ("exact_limit", b"5\r\nhello\r\n0\r\n\r\n", 5, Want::Ok(b"hello", true)),
        ("over_limit", b"5\r\nhello\r\n0\r\n\r\n", 4, Want::TooLarge),
        ("over_limit_second_chunk", b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5, Want::TooLarge),
        ("bare_lf_after_size", b"5\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("bare_lf_after_data", b"5\r\nhello\n0\r\n\r\n", 0, Want::Malformed),
        ("bare_lf_final", b"0\r\n\n", 0, Want::Malformed),
        ("bare_cr_after_size", b"5\rxhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("data_longer_than_size", b"3\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("plus_sign", b"+5\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("minus_sign", b"-5\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("0x_prefix", b"0x5\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("leading_space", b" 5\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("trailing_space_no_ext", b"5 \r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("empty_size", b"\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("non_hex", b"5g\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("overflow", b"10000000000000000\r\n", 0, Want::Malformed),
        // No configured limit still means 1 TiB: refused at once.
        ("max_u64_size_declared", b"ffffffffffffffff\r\nab", 0, Want::TooLarge),
        ("just_over_1_tib", b"10000000001\r\nab", 0, Want::TooLarge),
        ("1_tib_exactly", b"10000000000\r\nab", 0, Want::Ok(b"ab", false)),
        ("bad_ext_name", b"5;=x\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("bad_ext_char", b"5;a@b\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("ext_ctl_in_quoted", b"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("ext_trailing_ws_before_crlf", b"5;a=b \r\nhello\r\n0\r\n\r\n", 0, Want::Malformed),
        ("trailer_obs_fold", b"0\r\nX: a\r\n b\r\n\r\n", 0, Want::Malformed),
        ("trailer_space_before_colon", b"0\r\nX : a\r\n\r\n", 0, Want::Malformed),
        ("trailer_no_colon", b"0\r\nXa\r\n\r\n", 0, Want::Malformed),
        ("trailer_nul", b"0\r\nX: a\0\r\n\r\n", 0, Want::Malformed),
        ("trailer_bare_lf", b"0\r\nX: a\n\r\n", 0, Want::Malformed),
        ("nul_size", b"\0\r\n", 0, Want::Malformed),
    ];
    let mut failures = Vec::new();
    for (name, input, max, want) in cases {
        for (mode, got) in [("whole", decode_whole(input, *max)), ("bytewise", decode_bytewise(input, *max))] {
            let ok = match (want, &got) {
                (Want::Ok(p, done), Ok((out, n, d))) => out.as_slice() == *p && d == done && *n == input.len(),
                (Want::Malformed, Err(ChunkError::Malformed(_))) => true,
                (Want::TooLarge, Err(ChunkError::TooLarge)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!("{name} ({mode}): got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

#[test]
fn chunked_stops_at_message_end() {
    let input = b"3\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n";
    let body_len = input.len() - b"GET / HTTP/1.1\r\n".len();
    let (out, n, done) = decode_whole(input, 0).unwrap();
    assert_eq!((out.as_slice(), n, done), (&b"abc"[..], body_len, true));
    let (out, n, done) = decode_bytewise(input, 0).unwrap();
    assert_eq!((out.as_slice(), n, done), (&b"abc"[..], body_len, true));
    // Feeding after completion consumes nothing.
    let mut d = ChunkedDecoder::new(0);
    let _ = d.feed(input, &mut |_: &[u8]| {}).unwrap();
    assert_eq!(d.feed(b"more", &mut |_: &[u8]| {}).unwrap(), (0, true));
}

#[test]
fn chunked_split_at_every_point() {
    let input = b"4;x=\"y\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nA: b\r\n\r\n";
    for split in 0..=input.len() {
        let mut d = ChunkedDecoder::new(0);
        let mut out = Vec::new();
        let (a, _) = d.feed(&input[..split], &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        let (b, done) = d.feed(&input[split..], &mut |b: &[u8]| out.extend_from_slice(b)).unwrap();
        assert_eq!(a + b, input.len());
        assert!(done);
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
    }
}

#[test]
fn chunked_limits_and_sticky_error() {
    let mut line = b"5;".to_vec();
    line.resize(line.len() + MAX_CHUNK_LINE as usize, b'a');
    assert!(matches!(decode_whole(&line, 0), Err(ChunkError::Malformed(_))));
    let mut tr = b"0\r\nX: ".to_vec();
    tr.resize(tr.len() + MAX_TRAILER_BYTES as usize, b'a');
    assert!(matches!(decode_whole(&tr, 0), Err(ChunkError::Malformed(_))));
    let mut d = ChunkedDecoder::new(0);
    assert!(d.feed(b"x", &mut |_: &[u8]| {}).is_err());
    assert!(d.feed(b"5\r\n", &mut |_: &[u8]| {}).is_err());
    d.reset(0);
    assert_eq!(d.feed(b"0\r\n\r\n", &mut |_: &[u8]| {}).unwrap(), (5, true));
}

// ---------------------------------------------------------------------------
// Rewrite
// ---------------------------------------------------------------------------

fn boxed(extra: &[(&[u8], &[u8])]) -> Vec<HeaderPair> {
    extra.iter().map(|(n, v)| (Box::from(*n), Box::from(*v))).collect()
}

fn ctx(extra: &[HeaderPair]) -> ForwardCtx<'_> {
    ForwardCtx {
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        proto: "http",
        path_override: None,
        extra_headers: extra,
        request_id: b"rid-1",
        host: HostOut::Client,
        policy_lines: b"",
        drop_names: &[],
    }
}

fn rewrite(raw: &[u8], c: &ForwardCtx) -> String {
    let (r, h) = parse_ok(raw);
    let mut out = Vec::new();
    write_request_head(&mut out, &RequestView::new(raw, &r, &h), c);
    String::from_utf8(out).unwrap()
}

#[test]
fn rewrite_basic_get() {
    let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        rewrite(raw, &ctx(&[])),
        "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\
         x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-real-ip: 10.0.0.9\r\n\
         x-request-id: rid-1\r\n\r\n"
    );
}

#[test]
fn rewrite_hop_by_hop_and_forwarding() {
    let raw = b"POST /p HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, X-Secret, Host, Content-Length\r\n\
        Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\n\
        X-Secret: s\r\nx-secret: t\r\nExpect: 100-continue\r\nX-Forwarded-For: 1.1.1.1\r\n\
        X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nx-forwarded-for: 2.2.2.2, 3.3.3.3\r\n\
        X-Request-Id: abc\r\nContent-Length: 0004\r\n\r\nbody";
    assert_eq!(
        rewrite(raw, &ctx(&[])),
        "POST /p HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc\r\nContent-Length: 4\r\n\
         x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
         x-real-ip: 10.0.0.9\r\n\r\n"
    );
}

#[test]
fn rewrite_chunked_keeps_framing_only() {
    let raw = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut c = ctx(&[]);
    c.request_id = b"";
    assert_eq!(
        rewrite(raw, &c),
        "POST /u HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\
         x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-real-ip: 10.0.0.9\r\n\r\n"
    );
}

#[test]
fn rewrite_websocket_upgrade() {
    let raw =
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n";
    let mut c = ctx(&[]);
    c.request_id = b"";
    assert_eq!(
        rewrite(raw, &c),
        "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
         connection: upgrade\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
         x-real-ip: 10.0.0.9\r\n\r\n"
    );
}

#[test]
fn rewrite_route_headers_path_override_ipv6() {
    let raw = b"GET /api/v1/x?q HTTP/1.1\r\nHost: h\r\nX-Route: client\r\nx-request-id: cli\r\n\r\n";
    let extra: &[(&[u8], &[u8])] = &[
        (b"X-Route", b"conf"),
        (b"Content-Length", b"99"), // ignored: framing
        (b"X-Bad", b"a\r\nb"),      // ignored: injection
    ];
    let extra = boxed(extra);
    let mut c = ctx(&extra);
    c.path_override = Some(b"/x?q");
    c.client_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    c.proto = "https";
    assert_eq!(
        rewrite(raw, &c),
        "GET /x?q HTTP/1.1\r\nHost: h\r\nx-request-id: cli\r\n\
         x-forwarded-for: ::1\r\nx-forwarded-proto: https\r\nx-real-ip: ::1\r\nX-Route: conf\r\n\r\n"
    );
    // IPv4-mapped addresses are written as IPv4; empty override means "/".
    c.client_ip = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    c.path_override = Some(b"");
    let out = rewrite(raw, &c);
    assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
    assert!(out.contains("x-real-ip: 192.0.2.1\r\n"), "{out}");
}

#[test]
fn rewrite_absolute_form_and_http10_without_host() {
    let raw = b"GET http://example.com:81?x HTTP/1.1\r\nHost: ignored\r\nA: b\r\n\r\n";
    let mut c = ctx(&[]);
    c.request_id = b"";
    assert_eq!(
        rewrite(raw, &c),
        "GET /?x HTTP/1.1\r\nhost: example.com:81\r\nA: b\r\n\
         x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-real-ip: 10.0.0.9\r\n\r\n"
    );
    let raw = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(
        rewrite(raw, &c),
        "GET / HTTP/1.1\r\nhost: \r\n\
         x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-real-ip: 10.0.0.9\r\n\r\n"
    );
    // A route-configured Host replaces the client's.
    let extra: &[(&[u8], &[u8])] = &[(b"host", b"backend.local")];
    let extra = boxed(extra);
    let mut c2 = ctx(&extra);
    c2.request_id = b"";
    let raw = b"GET / HTTP/1.1\r\nHost: client\r\n\r\n";
    assert_eq!(
        rewrite(raw, &c2),
        "GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
         x-real-ip: 10.0.0.9\r\nhost: backend.local\r\n\r\n"
    );
}

fn rewrite_resp(raw: &[u8], m: Method, close: bool, dechunk: bool) -> String {
    let mut h = Vec::new();
    let r = match parse_response(raw, &lim(), m, &mut h) {
        Ok(Some(r)) => r,
        other => panic!("{other:?}"),
    };
    let mut out = Vec::new();
    write_response_head(&mut out, raw, &r, &h, Persist::of(close, false), dechunk);
    String::from_utf8(out).unwrap()
}

#[test]
fn rewrite_response() {
    let raw = b"HTTP/1.0 200 Fine\r\nServer: s\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
        X-Hop: 1\r\nContent-Length: 005\r\nTrailer: X\r\n\r\nhello";
    assert_eq!(
        rewrite_resp(raw, Method::Get, false, false),
        "HTTP/1.1 200 Fine\r\nServer: s\r\nContent-Length: 5\r\n\r\n"
    );
    assert_eq!(
        rewrite_resp(raw, Method::Get, true, false),
        "HTTP/1.1 200 Fine\r\nServer: s\r\nContent-Length: 5\r\nconnection: close\r\n\r\n"
    );
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\nX: y\r\n\r\n";
    assert_eq!(
        rewrite_resp(raw, Method::Get, false, false),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"
    );
    assert_eq!(rewrite_resp(raw, Method::Get, true, true), "HTTP/1.1 200 OK\r\nX: y\r\nconnection: close\r\n\r\n");
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
    assert_eq!(rewrite_resp(raw, Method::Head, false, false), "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
    let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n";
    assert_eq!(
        rewrite_resp(raw, Method::Get, false, false),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nconnection: upgrade\r\n\r\n"
    );
    let raw = b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(rewrite_resp(raw, Method::Get, false, false), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn error_responses() {
    let mut out = Vec::new();
    write_error_response(&mut out, 400, Persist::Close, b"");
    assert_eq!(
        out,
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nBad Request\n"
    );
    out.clear();
    write_error_response(&mut out, 503, Persist::KeepAlive, b"retry-after: 1\r\n");
    assert_eq!(
        out,
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nretry-after: 1\r\n\r\nService Unavailable\n"
    );
    // The error response is itself a valid response.
    let r = resp_ok(&out, Method::Get);
    assert_eq!((r.status, r.body), (503, BodyKind::Length(20)));
    assert_eq!(r.head_len + 20, out.len());
}

#[test]
fn rewritten_request_reparses() {
    let raw = b"POST http://a.example/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
    let (r, h) = parse_ok(raw);
    let mut out = Vec::new();
    write_request_head(&mut out, &RequestView::new(raw, &r, &h), &ctx(&[]));
    let (r2, _) = parse_ok(&out);
    assert_eq!(r2.body, BodyKind::Chunked);
    assert_eq!(r2.head_len, out.len());
    assert!(r2.keep_alive);
    assert_eq!(slice(&out, r2.host.unwrap()), b"a.example");
}

#[test]
fn canonical_chunks_and_last_chunk() {
    let mut out = Vec::new();
    push_chunk(&mut out, b"");
    assert!(out.is_empty(), "an empty piece would read as the last chunk");
    push_chunk(&mut out, b"hello");
    push_chunk(&mut out, &[b'x'; 26]);
    push_chunk(&mut out, &[b'y'; 4096]);
    let mut expect = b"5\r\nhello\r\n1a\r\n".to_vec();
    expect.extend_from_slice(&[b'x'; 26]);
    expect.extend_from_slice(b"\r\n1000\r\n");
    expect.extend_from_slice(&[b'y'; 4096]);
    expect.extend_from_slice(b"\r\n");
    assert_eq!(out, expect);

    let mut last = Vec::new();
    push_last_chunk(&mut last, b"X-A: 1\r\nhost:evil\r\nContent-Length: 9\r\nx-b:2\r\nTRANSFER-ENCODING: chunked\r\n");
    assert_eq!(last, b"0\r\nX-A: 1\r\nx-b:2\r\n\r\n");
    let mut bare = Vec::new();
    push_last_chunk(&mut bare, b"");
    assert_eq!(bare, b"0\r\n\r\n");
}

#[test]
fn the_decoder_keeps_trailer_lines_and_allocates_nothing_without() {
    let mut d = ChunkedDecoder::new(0);
    let (used, done) = d.feed(b"3\r\nabc\r\n0\r\n\r\n", &mut |_| {}).expect("ok");
    assert!(done && used == 13);
    assert!(d.trailers().is_empty());
    let mut d = ChunkedDecoder::new(0);
    // Fed a byte at a time: trailer lines still come out whole.
    for &b in b"3\r\nabc\r\n0\r\nX-T: v\r\nY:w\r\n\r\n".iter() {
        d.feed(&[b], &mut |_| {}).expect("ok");
    }
    assert_eq!(d.trailers(), b"X-T: v\r\nY:w\r\n");
}
