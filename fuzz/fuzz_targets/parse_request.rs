//! The request-head parser on arbitrary bytes: never panics; what it
//! accepts is self-consistent (spans inside the buffer, the head length
//! within the input, a view that reads back), and the upstream head
//! written from it parses again with the same framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringway::http::{parse_request, write_request_head, ForwardCtx, HeadLimits, HeaderSpan, HostOut, RequestView};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_head_bytes: 64 * 1024, max_headers: 100 };
    let mut headers: Vec<HeaderSpan> = Vec::with_capacity(100);
    let Ok(Some(head)) = parse_request(data, &limits, &mut headers) else { return };
    assert!(head.head_len <= data.len());
    let view = RequestView::new(data, &head, &headers);
    let _ = (view.method(), view.target(), view.authority(), view.path());
    for (n, v) in view.headers() {
        assert!(!n.is_empty());
        let _ = v;
    }
    let ctx = ForwardCtx {
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        proto: "http",
        path_override: None,
        extra_headers: &[],
        request_id: b"fuzz",
        // As the proxy does: a request without Host gets the backend's.
        host: if view.authority().is_some() { HostOut::Client } else { HostOut::Value(b"backend.test") },
        policy_lines: b"",
        drop_names: &[],
    };
    let mut out = Vec::new();
    write_request_head(&mut out, &view, &ctx);
    let mut again: Vec<HeaderSpan> = Vec::with_capacity(256);
    let limits = HeadLimits { max_head_bytes: 1 << 20, max_headers: 256 };
    match parse_request(&out, &limits, &mut again) {
        Ok(Some(h2)) => {
            assert_eq!(h2.body, head.body, "framing changed when forwarded");
            assert_eq!(h2.head_len, out.len());
        }
        other => panic!("the forwarded head does not parse: {other:?}\n{}", String::from_utf8_lossy(&out)),
    }
});
