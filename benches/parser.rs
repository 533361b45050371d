//! Parser micro-benchmark (harness = false).
//!
//! In the main crate: benches/parser.rs with
//! `[[bench]] name = "parser" harness = false` in Cargo.toml.
//! Run: `cargo bench --bench parser`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ringway::http::{parse_request, write_request_head, ForwardCtx, HeadLimits, HeaderSpan, RequestView};

const ITERS: u32 = 5_000_000;
/// `cargo test --all-targets` runs benches once without `--bench`: then a
/// smoke run is enough to prove the bench still works.
fn iters() -> u32 {
    if std::env::args().any(|a| a == "--bench") {
        ITERS
    } else {
        1000
    }
}

const REQ: &[u8] = b"GET /assets/app/main.js?v=3f9a2c HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://www.example.com/index.html\r\n\
Connection: keep-alive\r\n\
Cookie: session=abc123def456; theme=dark\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
\r\n";

fn main() {
    let limits = HeadLimits { max_head_bytes: 16 * 1024, max_headers: 100 };
    let mut headers: Vec<HeaderSpan> = Vec::with_capacity(100);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let route_headers: Vec<ringway::http::HeaderPair> = vec![(Box::from(&b"x-route"[..]), Box::from(&b"static"[..]))];
    let ctx = ForwardCtx {
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        proto: "http",
        path_override: None,
        extra_headers: &route_headers,
        request_id: b"0123456789abcdef",
        host: ringway::http::HostOut::Client,
        policy_lines: b"",
        drop_names: &[],
    };
    println!("request head: {} bytes", REQ.len());

    // Warm up and sanity check.
    let head = match parse_request(REQ, &limits, &mut headers) {
        Ok(Some(h)) => h,
        other => {
            eprintln!("benchmark request does not parse: {other:?}");
            std::process::exit(1);
        }
    };
    assert_eq!(head.head_len, REQ.len());

    let t = Instant::now();
    let mut sink = 0usize;
    for _ in 0..iters() {
        if let Ok(Some(h)) = parse_request(black_box(REQ), &limits, &mut headers) {
            sink = sink.wrapping_add(h.head_len);
        }
    }
    let el = t.elapsed();
    black_box(sink);
    println!("parse_request:      {:>8.1} ns/op", el.as_nanos() as f64 / f64::from(iters()));

    let t = Instant::now();
    for _ in 0..iters() {
        out.clear();
        write_request_head(&mut out, &RequestView::new(black_box(REQ), &head, &headers), &ctx);
        black_box(&out);
    }
    let el = t.elapsed();
    println!("write_request_head: {:>8.1} ns/op ({} bytes out)", el.as_nanos() as f64 / f64::from(iters()), out.len());

    let t = Instant::now();
    for _ in 0..iters() {
        if let Ok(Some(h)) = parse_request(black_box(REQ), &limits, &mut headers) {
            out.clear();
            write_request_head(&mut out, &RequestView::new(REQ, &h, &headers), &ctx);
            black_box(&out);
        }
    }
    let el = t.elapsed();
    println!("parse + rewrite:    {:>8.1} ns/op", el.as_nanos() as f64 / f64::from(iters()));
}
