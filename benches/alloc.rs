//! Allocations per proxied request in steady state, counted by a counting
//! global allocator over an in-process run: ringway (one worker) between a
//! client and a backend that themselves never allocate per request.
//! `cargo bench --bench alloc` (under `cargo test` it runs a smoke pass and
//! still fails if the hot path allocates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringway::runtime::{self, Driver};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(n as u64, Ordering::Relaxed);
        LIVE.fetch_add(n as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello world\n";
const REQUEST: &[u8] =
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: alloc-bench\r\nAccept: */*\r\n\r\n";

/// Reads one head (and `body` more bytes) into a fixed buffer.
fn read_message(s: &mut TcpStream, buf: &mut [u8; 4096], body: usize) -> bool {
    let mut n = 0;
    loop {
        match s.read(&mut buf[n..]) {
            Ok(0) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
            Ok(k) => n += k,
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            if n >= end + 4 + body {
                return true;
            }
        }
        if n == buf.len() {
            return false;
        }
    }
}

fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while read_message(&mut s, &mut buf, 0) {
                    if s.write_all(RESPONSE).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warm, measured) = if bench { (5_000u64, 100_000u64) } else { (500, 2_000) };
    let port = backend();
    let text = format!(
        r#"{{"listen":["127.0.0.1:0"],"routes":[{{"vHost":"*","health":{{"intervalMs":0}},
            "backends":[{{"hostname":"127.0.0.1","port":{port}}}]}}]}}"#
    );
    let config = control::model::parse_config(&text).expect("valid config");
    let running = runtime::start(config, Some(1), Driver::Auto).expect("ringway starts");
    let addr = running.proxy_addrs[0];
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 4096];
    let mut one = |c: &mut TcpStream| {
        c.write_all(REQUEST).expect("write");
        assert!(read_message(c, &mut buf, 12), "no complete response");
    };
    for _ in 0..warm {
        one(&mut c);
    }
    let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    let t0 = std::time::Instant::now();
    for _ in 0..measured {
        one(&mut c);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (a1, b1) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    let per = (a1 - a0) as f64 / measured as f64;
    println!(
        "allocations per proxied request (steady state, {measured} requests in {secs:.2} s): {per:.4} \
         ({} allocations, {} bytes; {:.0} per second: the periodic stats delta, not the requests)",
        a1 - a0,
        b1 - b0,
        (a1 - a0) as f64 / secs
    );
    // The stats flush allocates its delta a few times per 100 ms whatever
    // the load; an allocation per request would show as per >= 1.
    assert!(per < 0.5, "the hot path allocates: {per} per request");
    // Heap held per idle keep-alive client connection (one request each).
    let idle_conns = if bench { 1000 } else { 50 };
    let live0 = LIVE.load(Ordering::Relaxed);
    let mut held = Vec::with_capacity(idle_conns);
    for _ in 0..idle_conns {
        let mut k = TcpStream::connect(addr).expect("connect");
        k.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        k.write_all(REQUEST).expect("write");
        assert!(read_message(&mut k, &mut buf, 12), "no complete response");
        held.push(k);
    }
    std::thread::sleep(Duration::from_millis(300));
    let live1 = LIVE.load(Ordering::Relaxed);
    let held_bytes = live1.saturating_sub(live0) as f64 - (idle_conns * std::mem::size_of::<TcpStream>()) as f64;
    println!(
        "heap held per idle client connection ({idle_conns} connections): {:.0} bytes",
        held_bytes / idle_conns as f64
    );
    drop(held);
    drop(c);
    running.shutdown();
}
