//! The response-head parser on arbitrary bytes (for each request method
//! that changes framing): never panics; an accepted head lies within the
//! input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringway::http::{parse_response, HeadLimits, HeaderSpan, Method};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_head_bytes: 64 * 1024, max_headers: 256 };
    let mut headers: Vec<HeaderSpan> = Vec::with_capacity(256);
    for method in [Method::Get, Method::Head, Method::Connect] {
        if let Ok(Some(r)) = parse_response(data, &limits, method, &mut headers) {
            assert!(r.head_len <= data.len());
        }
    }
});
