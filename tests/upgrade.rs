//! Zero-downtime binary upgrades: SIGUSR2 (and `ringway ctl upgrade`)
//! start the binary at ringway's path on the same listening sockets; the
//! old process drains once the new one is ready. Proven under wrk load —
//! keep-alive and a new connection per request — across 10 upgrades in a
//! row: no non-2xx answer, no socket error. A new process that cannot
//! start leaves the old one serving (and taking changes again).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// A ringway started here (not through the harness: across upgrades the
/// serving process is not our child). Stops whatever pid the pid file
/// names on drop.
struct Upgradable {
    first: Child,
    pid_file: PathBuf,
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _lines: mpsc::Receiver<String>,
    /// Every process's log lines (they share the first one's stderr).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Upgradable {
    fn start(config_path: &Path, pid_file: &Path, extra: &[&str]) -> Upgradable {
        let mut first = Command::new(ringway_bin())
            .args(["run", "--config"])
            .arg(config_path)
            .args(["--workers", "2"])
            .args(extra)
            .env("RINGWAY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ringway");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (err, sink) = (first.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        // Every process of the chain prints its listening line on this pipe.
        let out = first.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the listening line");
        let l = parse_listening(&line).unwrap_or_else(|| panic!("not a listening line: {line}"));
        Upgradable {
            first,
            pid_file: pid_file.to_path_buf(),
            proxy: l.proxy[0],
            admin: l.admin.expect("an admin listener"),
            _lines: rx,
            log,
        }
    }

    /// Waits (bounded) for a log line containing `text`.
    fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log.lock().ok().and_then(|l| l.iter().find(|x| x.contains(text)).cloned());
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line with {text:?} after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        text.trim().parse().unwrap_or_else(|_| panic!("pid file {}: {text:?}", self.pid_file.display()))
    }

    /// SIGUSR2 to the serving process; waits (bounded) until a new one
    /// serves and the old one is gone. Returns the new pid.
    fn upgrade(&mut self) -> u32 {
        let old = self.pid();
        signal(old, "USR2");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let now = self.pid();
            if now != old && !alive(old, &mut self.first) {
                return now;
            }
            assert!(Instant::now() < deadline, "no upgrade after 40 s (old {old}, pid file {now})");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file).map(|t| t.trim().to_string()) {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Whether `pid` still runs (a zombie does not; the first process is our
/// child and is reaped here).
fn alive(pid: u32, first: &mut Child) -> bool {
    if pid == first.id() {
        return first.try_wait().ok().flatten().is_none();
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A backend, a config (with a pid file and a state file) in a temporary
/// directory, and ringway started on it.
struct Setup {
    backend: BackendHandle,
    dir: TempDir,
    config_path: PathBuf,
    rw: Upgradable,
}

impl Setup {
    /// `extra`: more `ringway run` arguments.
    fn start(tag: &str, extra: &[&str]) -> Setup {
        let backend = Backend::respond(200, "ok").named("app").start();
        let dir = TempDir::new(tag);
        let (config_path, pid_file) = write_config(&dir, &backend);
        let rw = Upgradable::start(&config_path, &pid_file, extra);
        Setup { backend, dir, config_path, rw }
    }
}

fn write_config(dir: &TempDir, backend: &BackendHandle) -> (PathBuf, PathBuf) {
    let pid_file = dir.join("ringway.pid");
    let mut cfg = with_admin(config(vec![route("*", "ROUND_ROBIN", vec![backend.config()])]), None);
    cfg["pidFile"] = json!(pid_file);
    cfg["stateFile"] = json!(dir.join("state.json"));
    cfg["timeouts"]["drainMs"] = json!(5000);
    let path = dir.join("ringway.json");
    std::fs::write(&path, cfg.to_string()).expect("config");
    (path, pid_file)
}

/// wrk's summary, after a bounded run.
fn wrk(addr: std::net::SocketAddr, seconds: u32, extra: &[&str]) -> std::thread::JoinHandle<String> {
    let url = format!("http://{addr}/");
    let args: Vec<String> = ["-t2", "-c16", &format!("-d{seconds}s"), "--timeout", "5s"]
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().map(|s| s.to_string()))
        .chain([url])
        .collect();
    std::thread::spawn(move || {
        let out = Command::new("timeout")
            .arg((seconds + 30).to_string())
            .arg("wrk")
            .args(&args)
            .output()
            .expect("wrk (scripts/test.sh installs it)");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn requests(summary: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn ten_upgrades_under_load_lose_no_request_and_refuse_no_connection() {
    let Setup { backend, dir: _dir, config_path: _, mut rw } = Setup::start("upgrade", &["--reset-state"]);
    let first = rw.pid();
    // A change made over the API lives on across upgrades (the new process
    // resumes from the state file even though this one started with
    // --reset-state).
    let kept = json!({"vHost": "kept.test", "backends": [backend.config()]});
    Api::new(rw.admin).post("/api/v1/routes", &kept).expect(201, "POST a route");
    let seconds = 25;
    let started = Instant::now();
    let keep_alive = wrk(rw.proxy, seconds, &[]);
    let per_request = wrk(rw.proxy, seconds, &["-H", "Connection: close"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut pids = vec![first];
    for _ in 0..10 {
        pids.push(rw.upgrade());
    }
    let upgrades_took = started.elapsed();
    let (keep_alive, per_request) = (keep_alive.join().expect("wrk"), per_request.join().expect("wrk"));
    println!("10 upgrades in {} ms; pids {pids:?}", upgrades_took.as_millis());
    println!("keep-alive:\n{keep_alive}\nconnection per request:\n{per_request}");
    assert!(upgrades_took < Duration::from_secs(seconds.into()), "every upgrade happened under load");
    for (name, summary) in [("keep-alive", &keep_alive), ("connection per request", &per_request)] {
        assert!(requests(summary) > 1000, "{name}: wrk ran:\n{summary}");
        assert!(!summary.contains("Non-2xx"), "{name}: every answer 2xx:\n{summary}");
        assert!(!summary.contains("Socket errors"), "{name}: no connect, read, write or timeout error:\n{summary}");
    }
    let mut unique = pids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 11, "eleven processes in turn: {pids:?}");
    // The last one serves the proxy and the admin API on the same sockets,
    // with the change made before the first upgrade.
    assert_eq!(get(rw.proxy, "a.test", "/").status, 200);
    let routes = Api::new(rw.admin).routes();
    assert!(routes.iter().any(|r| r["vHost"] == json!("kept.test")), "the API's route survived: {routes:?}");
    let info = Api::new(rw.admin).get("/api/v1/info").expect(200, "info").json;
    assert_eq!(info["pid"], json!(rw.pid()), "the admin listener moved too");
}

#[test]
fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let Setup { backend, dir: _dir, config_path, mut rw } = Setup::start("upgrade-fail", &[]);
    let pid = rw.pid();
    // The new process would read a broken config file.
    std::fs::write(&config_path, "{ not json").expect("break the config");
    let api = Api::new(rw.admin);
    // `ringway ctl upgrade` (POST /api/v1/upgrade).
    let ctl =
        Command::new(ringway_bin()).args(["ctl", "--admin", &rw.admin.to_string(), "upgrade"]).output().expect("ctl");
    let said = String::from_utf8_lossy(&ctl.stdout);
    assert!(ctl.status.success() && said.contains(&format!("upgrade started in pid {pid}")), "{said}");
    // The old process says why, and takes writes again.
    let why = rw.wait_log("upgrade failed, this process keeps serving");
    assert!(why.contains("exited before it was ready"), "{why}");
    let w = api.post("/api/v1/routes", &json!({"vHost": "later.test", "backends": [backend.config()]}));
    assert_eq!(w.status, 201, "writes work again after the failed upgrade: {}", w.json);
    assert!(alive(pid, &mut rw.first), "the old process still runs");
    assert_eq!(rw.pid(), pid, "and the pid file still names it");
    assert_eq!(get(rw.proxy, "later.test", "/").status, 200, "it serves, with the change made after");
}

#[test]
fn a_config_with_new_listeners_is_applied_by_an_upgrade() {
    let Setup { backend: _backend, dir: _dir, config_path, mut rw } = Setup::start("upgrade-listen", &[]);
    let old_port = rw.proxy;
    // A second listener on a new port, and the admin API where it was.
    let extra = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    // And a TLS listener, which the new process binds.
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config")).expect("json");
    cfg["listen"] = json!([old_port.to_string(), extra.to_string()]);
    cfg["tls"] = json!({"listen": [tls_port.to_string()],
                        "certificates": [{"cert": leaf.cert_path, "key": leaf.key_path, "default": true}]});
    std::fs::write(&config_path, cfg.to_string()).expect("config");
    let pid = rw.upgrade();
    assert_ne!(pid, 0);
    assert_eq!(get(old_port, "a.test", "/").status, 200, "the old port, handed over");
    assert_eq!(get(extra, "a.test", "/").status, 200, "the new port, bound by the new process");
    assert_eq!(curl_https(tls_port.port(), "a.test", "/", ca.ca_path()).status, 200, "the new TLS listener");
    // A second upgrade hands the TLS listener over too.
    let again = rw.upgrade();
    assert_ne!(again, pid);
    assert_eq!(curl_https(tls_port.port(), "a.test", "/", ca.ca_path()).status, 200, "the TLS listener, handed over");
    assert_eq!(Api::new(rw.admin).get("/api/v1/info").expect(200, "info").json["pid"], json!(again));
}
