//! Time from an API write to its answer (every worker has acked the new
//! generation), with 1, 2 and 10,000 routes present, two workers, without
//! and with a state file (each write durable before it is answered); and
//! the process's RSS after start and after the writes.
//! `cargo bench --bench api_latency` (under `cargo test`: a smoke pass).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway::runtime::{self, Driver};

fn call(admin: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(admin).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("admin read: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

fn run(routes: usize, writes: usize, persist: bool) {
    let list: Vec<String> = (0..routes)
        .map(|i| format!(r#"{{"vHost":"r{i}.bench","health":{{"intervalMs":0}},"backends":[{{"hostname":"127.0.0.1","port":9}}]}}"#))
        .collect();
    let text =
        format!(r#"{{"listen":["127.0.0.1:0"],"admin":{{"listen":"127.0.0.1:0"}},"routes":[{}]}}"#, list.join(","));
    let config = control::model::parse_config(&text).expect("valid config");
    let dir = std::env::temp_dir().join(format!("ringway-api-bench-{}-{routes}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let state_file = persist.then(|| dir.join("state.json"));
    let opts = runtime::Options {
        workers: Some(2),
        driver: Driver::Auto,
        state_file,
        reset_state: false,
        inherited: Default::default(),
    };
    let running = runtime::start_with(config, opts).expect("ringway starts");
    let rss_start = rss_mb();
    let admin = running.admin_addr.expect("admin listener");
    let mut times = Vec::with_capacity(writes);
    for i in 0..writes {
        let t = Instant::now();
        let status = if i % 2 == 0 {
            call(admin, "POST", "/api/v1/routes/r0.bench/backends", r#"{"id":"x","hostname":"127.0.0.1","port":10}"#)
        } else {
            call(admin, "DELETE", "/api/v1/routes/r0.bench/backends/x", "")
        };
        times.push(t.elapsed());
        assert!(status == 201 || status == 204, "write answered {status}");
    }
    times.sort();
    let pct = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "{routes:>6} routes{}: API write → all workers acked: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  ({writes} writes, 2 workers); RSS {rss_start:.0} MB → {:.0} MB",
        if persist { ", state file" } else { "" },
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        rss_mb()
    );
    running.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if bench {
        let writes: usize = std::env::var("API_BENCH_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        // API_BENCH_ONLY=10000 runs just the 10,000-route rows (profiling).
        let only: Option<usize> = std::env::var("API_BENCH_ONLY").ok().and_then(|v| v.parse().ok());
        for (routes, n, persist) in [(1, 200, false), (1, 200, true), (10_000, writes, false), (10_000, writes, true)] {
            if only.is_none_or(|o| o == routes) {
                run(routes, n, persist);
            }
        }
    } else {
        run(1, 4, false);
        run(2, 4, true);
    }
}
