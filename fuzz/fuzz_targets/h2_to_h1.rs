//! HTTP/2 → HTTP/1.1 downgrade on arbitrary requests (what h2 hands us after
//! HPACK: a method, a URI, header names and values the `http` crate
//! accepts): the head we write always parses as one request of exactly its
//! length, or is refused as a whole; Host is the authority; nothing the
//! client sent can frame the body or the connection (no transfer-encoding
//! but our own chunked, one `connection: close`, te only as trailers).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringway::conn::h2stream::h1_request_head;
use ringway::http::{parse_request, HeadLimits, HeaderSpan, RequestView};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == 0);
    let (Some(method), Some(path), Some(authority)) = (fields.next(), fields.next(), fields.next()) else { return };
    let has_body = path.first().is_some_and(|b| b & 1 == 1);
    let mut uri = http::Uri::builder().scheme("https").path_and_query(path);
    if !authority.is_empty() {
        uri = uri.authority(authority);
    }
    let Ok(uri) = uri.build() else { return };
    let mut req = http::Request::builder().method(method).uri(uri);
    let rest: Vec<&[u8]> = fields.collect();
    for pair in rest.chunks(2) {
        let [name, value] = pair else { break };
        let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) else { return };
        req = req.header(n, v);
    }
    let Ok(req) = req.body(()) else { return };
    let (parts, ()) = req.into_parts();
    let (head, chunked) = h1_request_head(&parts, has_body);

    let limits = HeadLimits { max_head_bytes: 1 << 20, max_headers: 10_000 };
    let mut spans: Vec<HeaderSpan> = Vec::new();
    let parsed = match parse_request(&head, &limits, &mut spans) {
        Ok(Some(p)) => p,
        // Refused whole (e.g. two different content-lengths): nothing smuggled.
        Ok(None) => panic!("an incomplete head: {:?}", String::from_utf8_lossy(&head)),
        Err(_) => return,
    };
    assert_eq!(parsed.head_len, head.len(), "exactly one request head");
    let view = RequestView::new(&head, &parsed, &spans);
    assert_eq!(view.method(), parts.method.as_str().as_bytes());
    if !authority.is_empty() {
        assert_eq!(view.authority(), Some(authority), "Host is the authority");
    }
    let mut connection = 0;
    let mut te_chunked = 0;
    for (n, v) in view.headers() {
        let n = n.to_ascii_lowercase();
        match n.as_slice() {
            b"connection" => {
                connection += 1;
                assert_eq!(v, b"close");
            }
            b"transfer-encoding" => {
                te_chunked += 1;
                assert_eq!(v, b"chunked");
            }
            b"te" => assert!(v.eq_ignore_ascii_case(b"trailers")),
            b"keep-alive" | b"proxy-connection" | b"upgrade" | b"expect" => panic!("{:?} forwarded", n),
            _ => {}
        }
    }
    assert_eq!(connection, 1, "one connection: close");
    assert_eq!(te_chunked, usize::from(chunked), "only our own chunked");
});
