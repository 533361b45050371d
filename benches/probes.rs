//! Health checks at scale: 10,000 backends probed every second by the one
//! prober thread, 1,000 of them accepting and never answering. Reports
//! checks per second achieved against scheduled (answering and silent
//! backends apart) and the prober thread's CPU.
//! `cargo bench --bench probes` (under `cargo test`: 1,000 backends for
//! 2 s, and it fails if the prober falls far behind or a check of an
//! answering backend fails).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::messages::BackendKey;
use ringway::controller::probe::{self, ProbeCmd, Target};
use ringway::runtime::Driver;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// Answering and silent listeners, served by one monoio thread.
struct Servers {
    answering: Vec<SocketAddr>,
    silent: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
}

fn listeners(n: usize) -> Vec<TcpListener> {
    (0..n)
        .map(|i| {
            // Spread over 127.0.0.x: many connections a second, few port reuses.
            let ip = format!("127.0.0.{}", 1 + i % 200);
            let l = TcpListener::bind((ip.as_str(), 0)).expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .collect()
}

fn start_servers(answering: usize, silent: usize) -> Servers {
    let a = listeners(answering);
    let s = listeners(silent);
    let addrs = |v: &[TcpListener]| v.iter().map(|l| l.local_addr().expect("addr")).collect::<Vec<_>>();
    let servers = Servers {
        answering: addrs(&a),
        silent: addrs(&s),
        stop: Arc::new(AtomicBool::new(false)),
        served: Arc::new(AtomicU64::new(0)),
    };
    let (stop, served) = (servers.stop.clone(), servers.served.clone());
    std::thread::spawn(move || {
        let _ = ringway::runtime::block_on(Driver::Auto, async move {
            for l in a {
                let served = served.clone();
                monoio::spawn(accept_loop(l, true, served));
            }
            for l in s {
                monoio::spawn(accept_loop(l, false, served.clone()));
            }
            while !stop.load(Ordering::Relaxed) {
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    servers
}

async fn accept_loop(l: TcpListener, answer: bool, served: Arc<AtomicU64>) {
    let Ok(l) = monoio::net::TcpListener::from_std(l) else { return };
    while let Ok((mut c, _)) = l.accept().await {
        let served = served.clone();
        monoio::spawn(async move {
            use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
            let mut buf = vec![0u8; 4096];
            loop {
                let (r, b) = c.read(buf).await;
                buf = b;
                match r {
                    Ok(n) if n > 0 && answer && buf[..n].windows(4).any(|w| w == b"\r\n\r\n") => {
                        let _ = c.write_all(RESPONSE).await;
                        served.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // Silent: read (and ignore) until the prober gives up.
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
            }
        });
    }
}

/// CPU seconds used so far by this process's thread named `name`.
fn thread_cpu(name: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
        return Some((u + s) / tick);
    }
    None
}

fn target(i: usize, addr: SocketAddr, interval: Duration, timeout: Duration) -> Target {
    Target {
        key: BackendKey { route: Arc::from(format!("r{i}.test")), backend: Arc::from("b") },
        addr,
        host: addr.to_string(),
        path: "/health".into(),
        interval,
        down_interval: interval,
        timeout,
        expect: (200, 399),
        tcp_only: false,
        expect_body: None,
        headers: String::new(),
        method: "GET".into(),
        tls: None,
        tls_wanted: false,
        grpc: false,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, silent_n, secs) = if bench { (10_000, 1_000, 10) } else { (1_000, 100, 2) };
    ringway::runtime::raise_nofile_limit();
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(900);
    let servers = start_servers(20, 10);
    let targets: Vec<Target> = (0..n)
        .map(|i| {
            let addr = if i < silent_n {
                servers.silent[i % servers.silent.len()]
            } else {
                servers.answering[i % servers.answering.len()]
            };
            target(i, addr, interval, timeout)
        })
        .collect();
    let (tx, rx) = ringway::worker::inbox::inbox();
    let (res_tx, res_rx) = crossbeam_channel::unbounded();
    tx.send(ProbeCmd::Targets(targets));
    let prober = std::thread::Builder::new()
        .name("ringway-health".into())
        .spawn(move || {
            let driver = ringway::runtime::resolve_driver(Driver::Auto);
            ringway::runtime::block_on(driver, probe::schedule(rx, res_tx)).expect("the probe runtime")
        })
        .expect("prober thread");

    // Warm-up: the first round is spread over about n × 100 µs.
    let warm = Duration::from_secs(1) + Duration::from_micros(100 * n as u64);
    let until = Instant::now() + warm;
    while Instant::now() < until {
        let _ = res_rx.recv_timeout(Duration::from_millis(50));
    }
    let cpu0 = thread_cpu("ringway-health").unwrap_or(0.0);
    let t0 = Instant::now();
    let (mut ok, mut failed_answering, mut silent_results) = (0u64, 0u64, 0u64);
    let end = t0 + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Ok(r) = res_rx.recv_timeout(Duration::from_millis(50)) {
            let i: usize = r.key.route.trim_start_matches('r').trim_end_matches(".test").parse().unwrap_or(usize::MAX);
            if i < silent_n {
                silent_results += 1;
            } else if r.ok {
                ok += 1;
            } else {
                failed_answering += 1;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu("ringway-health").unwrap_or(0.0) - cpu0;
    drop(tx);
    let _ = prober.join();
    servers.stop.store(true, Ordering::Relaxed);

    let scheduled = n as f64 / interval.as_secs_f64();
    let answering_rate = (ok + failed_answering) as f64 / elapsed;
    let silent_rate = silent_results as f64 / elapsed;
    println!(
        "probes: {n} backends ({silent_n} silent), interval {} ms, timeout {} ms, {elapsed:.1} s measured",
        interval.as_millis(),
        timeout.as_millis()
    );
    println!(
        "  checks/s achieved {:.0} of {scheduled:.0} scheduled ({:.1} %): answering {answering_rate:.0}/s \
         ({failed_answering} failed), silent {silent_rate:.0}/s (all time out)",
        answering_rate + silent_rate,
        100.0 * (answering_rate + silent_rate) / scheduled
    );
    println!(
        "  prober thread CPU {:.1} % of one core ({:.1} µs per check); backends served {}",
        100.0 * cpu / elapsed,
        1e6 * cpu / ((ok + failed_answering + silent_results).max(1) as f64),
        servers.served.load(Ordering::Relaxed)
    );
    let achieved = (answering_rate + silent_rate) / scheduled;
    assert!(failed_answering == 0, "{failed_answering} checks of answering backends failed");
    assert!(achieved > 0.8, "the prober fell behind: {:.1} % of scheduled checks", 100.0 * achieved);
}
