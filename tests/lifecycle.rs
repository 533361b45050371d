//! `ringway check`, graceful shutdown and multiple workers.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn check_reports_every_error_with_its_path() {
    let bad = json!({"routes": [{"vHost": "*", "strategy": "FASTEST",
                                 "backends": [{"hostname": "127.0.0.1", "port": 0}]}]});
    let (code, stderr) = ringway_check(&bad);
    assert_eq!(code, 1, "stderr: {stderr}");
    assert!(stderr.contains("routes[0].backends[0].port"), "stderr: {stderr}");
    assert!(stderr.contains("routes[0].strategy"), "stderr: {stderr}");
}

#[test]
fn check_accepts_a_good_config() {
    let good = json!({"listen": ["127.0.0.1:0"], "routes": [{"vHost": "*", "strategy": "ROUND_ROBIN",
                      "backends": [{"hostname": "127.0.0.1", "port": 8081}]}]});
    let (code, stderr) = ringway_check(&good);
    assert_eq!(code, 0, "stderr: {stderr}");
}

#[test]
fn sigterm_drains_in_flight_request_and_exits_zero() {
    let b = Backend::respond(200, "slow").delayed(Duration::from_millis(500)).start();
    let mut rw = Ringway::start(set(catch_all("ROUND_ROBIN", &[&b]), "timeouts", "drainMs", json!(3000)));
    let addr = rw.addr();
    let inflight = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.get("x", "/slow")
    });
    b.wait_for_requests(1, Duration::from_secs(5));
    let t0 = Instant::now();
    rw.terminate();
    // New connections are refused once the listener closes (bounded wait).
    let mut refused = false;
    while t0.elapsed() < Duration::from_millis(1500) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let r = inflight.join().expect("in-flight client");
    assert_eq!((r.status, r.text()), (200, "slow".to_string()), "in-flight request after SIGTERM");
    let status = rw.wait_exit(Duration::from_secs(5)).expect("ringway did not exit within drainMs + margin");
    assert!(status.success(), "exit status {status:?}; log:\n{}", rw.log());
    assert!(t0.elapsed() < Duration::from_secs(4), "exit took {:?}", t0.elapsed());
    assert!(refused, "new connections were still accepted after SIGTERM");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(), "accepting after exit");
}

#[test]
fn two_workers_serve_requests() {
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start_workers(catch_all("ROUND_ROBIN", &[&b]), 2);
    for i in 0..20 {
        let r = get(rw.addr(), "x", &format!("/{i}"));
        assert_eq!((r.status, r.text()), (200, "ok".to_string()), "request {i}");
    }
    let mut c = Client::connect(rw.addr());
    for i in 0..20 {
        assert_eq!(c.get("x", &format!("/ka/{i}")).status, 200);
    }
    assert_eq!(b.request_count(), 40);
}

/// utime+stime of a process, in clock ticks (1/100 s here).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

#[test]
fn an_idle_ringway_does_not_spin() {
    // Regression: a closed channel in the control thread's select made it
    // busy-loop on a whole core, halving proxy throughput.
    let b = Backend::respond(200, "ok").start();
    for admin in [false, true] {
        let mut cfg = catch_all("ROUND_ROBIN", &[&b]);
        if admin {
            cfg["admin"] = json!({"listen": "127.0.0.1:0"});
        }
        let rw = Ringway::start_workers(cfg, 2);
        assert_eq!(get(rw.addr(), "x", "/").status, 200);
        let before = cpu_ticks(rw.pid());
        let started = Instant::now();
        // Bounded: the idle window is one second of wall time.
        while started.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let used = cpu_ticks(rw.pid()) - before;
        // A spinning thread would use ~100 ticks in that second.
        assert!(used < 30, "ringway used {used} ticks of CPU while idle (admin: {admin})");
    }
}

#[test]
fn version_prints_the_package_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringway")).arg("--version").output().expect("run ringway");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ringway {}", env!("CARGO_PKG_VERSION")));
}

/// The example systemd unit passes `systemd-analyze verify` (scripts/test.sh
/// installs it) with this binary in place of /usr/local/bin/ringway, and
/// runs the commands this binary has.
#[test]
fn the_example_systemd_unit_verifies_and_uses_real_commands() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringway.service")).expect("unit");
    let dir = std::env::temp_dir().join(format!("ringway-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ringway.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ringway", env!("CARGO_BIN_EXE_ringway"))).expect("write");
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (not the host's other units).
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("ringway.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
    for line in [
        "ExecStart=/usr/local/bin/ringway run --config",
        "ExecReload=/usr/local/bin/ringway check --config",
        "ExecReload=/bin/sh -c 'kill -USR2 \"$(cat /run/ringway/ringway.pid)\"'",
        "ExitType=cgroup",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(line), "missing {line:?}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ringway")).args(["run", "--help"]).output().expect("run");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config FILE"));
}
