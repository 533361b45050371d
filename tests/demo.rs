//! `ringway demo`, README's first command: three built-in backends behind
//! ringway, the admin API and dashboard beside it, and what it prints works
//! as printed (the curl loop's answers name all three backends; the
//! dashboard URL serves the page; the `ringway ctl` example runs).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

#[test]
fn the_demo_serves_three_backends_and_its_dashboard_and_ctl_example_work() {
    let (listen, admin) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut child = Command::new(ringway_bin())
        .args(["demo", "--listen", &listen, "--admin", &admin, "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringway demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !printed.iter().any(|l: &String| l.starts_with("listening")) {
        assert!(Instant::now() < deadline, "no listening line: {printed:?}");
        match lines.next() {
            Some(Ok(l)) => printed.push(l),
            _ => panic!("the demo exited: {printed:?}"),
        }
    }
    let text = printed.join("\n");
    assert!(text.contains(&format!("dashboard:  http://{admin}/")), "{text}");
    assert!(text.contains(&format!("ringway ctl --admin {admin} stats")), "{text}");

    let addr = listen.parse().expect("addr");
    let mut served: Vec<String> =
        (0..6).map(|_| get(addr, "demo", "/").header("x-backend").unwrap_or("-").to_string()).collect();
    served.sort();
    served.dedup();
    assert_eq!(served, ["alpha", "beta", "gamma"], "round robin over the three demo backends");

    let page = get(admin.parse().expect("addr"), &admin, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("ringway"), "the dashboard page");
    let ctl = Command::new(ringway_bin()).args(["ctl", "--admin", &admin, "stats"]).output().expect("ringway ctl");
    let out = String::from_utf8_lossy(&ctl.stdout);
    assert!(ctl.status.success() && out.contains("alpha") && out.contains("REQUESTS"), "{out}");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
