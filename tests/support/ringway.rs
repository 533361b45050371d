//! The ringway process under test: `Ringway` (start it on a config, read
//! its `listening` line — `Listening`, `parse_listening` — signal it, stop
//! it), `StartFailure`, `ringway_check`, and the files around it
//! (`temp_path`, `write_config`, `state_file_of`, `TempDir`, `ringway_bin`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::client::Api;
use super::Value;

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A unique file path in the temp dir.
pub fn temp_path(tag: &str, ext: &str) -> std::path::PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    std::env::temp_dir().join(format!("ringway-test-{}-{tag}-{n}-{nanos}.{ext}", std::process::id()))
}

/// Writes `cfg` to a fresh temp file.
pub fn write_config(cfg: &Value) -> std::path::PathBuf {
    let path = temp_path("config", "json");
    std::fs::write(&path, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    path
}

pub fn ringway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

pub struct Ringway {
    child: Child,
    /// What its `listening` line said.
    listening: Listening,
    config_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
    /// Whether the config file (and the state file beside it) is ours to delete.
    owns_config: bool,
    exited: Option<ExitStatus>,
}

/// The addresses on ringway's `listening` line:
/// `listening proxy=ADDR[,ADDR] admin=ADDR|- tls=ADDR[,ADDR]|-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The plaintext proxy listeners (`proxy=`; none when it says `-`).
    pub proxy: Vec<SocketAddr>,
    /// The admin listener (`admin=`; `None` for `-` or when absent).
    pub admin: Option<SocketAddr>,
    /// The TLS proxy listeners (`tls=`; empty for `-` or when absent, as
    /// builds before TLS print no `tls=` field).
    pub tls: Vec<SocketAddr>,
}

/// Parses ringway's `listening` line; `None` for any other line. Fields
/// after `proxy=` may come in any order, and unknown ones are ignored.
/// Panics on a malformed address.
pub fn parse_listening(line: &str) -> Option<Listening> {
    let rest = line.strip_prefix("listening proxy=")?;
    let addrs = |list: &str| -> Vec<SocketAddr> {
        if list.is_empty() || list == "-" {
            return Vec::new();
        }
        list.split(',')
            .map(|a| a.parse::<SocketAddr>().unwrap_or_else(|_| panic!("bad listening line {line:?}")))
            .collect()
    };
    let mut words = rest.split(' ');
    let proxy = addrs(words.next().unwrap_or(""));
    let mut listening = Listening { proxy, admin: None, tls: Vec::new() };
    for w in words {
        if let Some(v) = w.strip_prefix("admin=") {
            listening.admin = if v == "-" {
                None
            } else {
                Some(v.parse::<SocketAddr>().unwrap_or_else(|_| panic!("bad listening line {line:?}")))
            };
        } else if let Some(v) = w.strip_prefix("tls=") {
            listening.tls = addrs(v);
        }
    }
    Some(listening)
}

/// Why ringway did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, when it exited (within the wait).
    pub status: Option<ExitStatus>,
    /// Its stderr.
    pub stderr: String,
}

/// Where ringway keeps the state file for `config_path` when the config
/// names none: `NAME.json` → `NAME.state.json`, beside it.
pub fn state_file_of(config_path: &std::path::Path) -> std::path::PathBuf {
    let stem = config_path.file_stem().unwrap().to_string_lossy().into_owned();
    config_path.with_file_name(format!("{stem}.state.json"))
}

impl Ringway {
    /// Starts ringway with one worker (deterministic balancing).
    pub fn start(cfg: Value) -> Ringway {
        Ringway::start_workers(cfg, 1)
    }

    /// Starts ringway and waits (at most 20 s) for its `listening` line.
    pub fn start_workers(cfg: Value, workers: usize) -> Ringway {
        Ringway::start_logging(cfg, workers, "warn")
    }

    /// `start_workers` with `RINGWAY_LOG` set to `level` (see `log()`).
    pub fn start_logging(cfg: Value, workers: usize, level: &str) -> Ringway {
        let config_path = write_config(&cfg);
        let mut rw = Ringway::try_start_at(&config_path, workers, level, &[])
            .unwrap_or_else(|f| panic!("ringway did not start ({:?}); stderr:\n{}", f.status, f.stderr));
        rw.owns_config = true;
        rw
    }

    /// Starts ringway on an existing config file (left in place on drop,
    /// as is its state file), with extra `run` arguments such as
    /// `--reset-state`.
    pub fn start_at(config_path: &std::path::Path, workers: usize, extra: &[&str]) -> Ringway {
        Ringway::try_start_at(config_path, workers, "warn", extra)
            .unwrap_or_else(|f| panic!("ringway did not start ({:?}); stderr:\n{}", f.status, f.stderr))
    }

    /// Like `start_at`, but a ringway that exits (or prints no `listening`
    /// line within 20 s) is an `Err` with its exit status and stderr.
    pub fn try_start_at(
        config_path: &std::path::Path,
        workers: usize,
        level: &str,
        extra: &[&str],
    ) -> Result<Ringway, StartFailure> {
        let log_path = temp_path("log", "txt");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(ringway_bin())
            .args(["run", "--config"])
            .arg(config_path)
            .args(["--workers", &workers.to_string()])
            .args(extra)
            .env("RINGWAY_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            // Nobody listens any more: keep draining.
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let fail = |child: &mut Child, log_path: &std::path::Path| {
            // Stdout closed (it exited) or the deadline passed: collect the
            // exit status within 5 s, else kill it.
            let until = Instant::now() + Duration::from_secs(5);
            let mut status = None;
            while Instant::now() < until {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let stderr = std::fs::read_to_string(log_path).unwrap_or_default();
            let _ = std::fs::remove_file(log_path);
            StartFailure { status, stderr }
        };
        let listening = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(l) = parse_listening(&line) {
                        break l;
                    }
                }
                Err(_) => return Err(fail(&mut child, &log_path)),
            }
        };
        Ok(Ringway {
            child,
            listening,
            config_path: config_path.to_path_buf(),
            log_path,
            owns_config: false,
            exited: None,
        })
    }

    /// The first plaintext proxy listener's address; panics when ringway
    /// runs none.
    pub fn addr(&self) -> SocketAddr {
        *self.listening.proxy.first().expect("ringway runs no plaintext proxy listener (`proxy=-`)")
    }

    /// The first TLS listener's address; `None` when ringway runs none (or
    /// is a build whose `listening` line has no `tls=` field).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listening.tls.first().copied()
    }

    /// Everything the `listening` line said.
    pub fn listening(&self) -> &Listening {
        &self.listening
    }

    /// The admin listener's address; panics when the config has none.
    pub fn admin_addr(&self) -> SocketAddr {
        self.listening.admin.expect("ringway runs no admin listener (no `admin` in the config)")
    }

    /// A client for the admin API, without a token.
    pub fn api(&self) -> Api {
        Api::new(self.admin_addr())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ringway's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) to this process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
    }

    /// SIGTERM, then waits (10 s) for a clean exit; panics otherwise.
    pub fn stop(&mut self) {
        self.terminate();
        let exit = self.wait_exit(Duration::from_secs(10));
        assert!(exit.is_some_and(|s| s.success()), "ringway did not exit cleanly after SIGTERM: {exit:?}");
    }

    /// Waits for the process to exit; `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.terminate();
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if self.owns_config {
            let state = state_file_of(&self.config_path);
            let tmp = state.with_file_name(format!(".{}.tmp", state.file_name().unwrap().to_string_lossy()));
            let _ = std::fs::remove_file(&state);
            let _ = std::fs::remove_file(
                state.with_file_name(format!("{}.log", state.file_name().unwrap().to_string_lossy())),
            );
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&self.config_path);
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// A fresh directory in the temp dir, removed with everything in it on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = temp_path(tag, "d");
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringway check --config` on `cfg`; returns (exit code, stderr).
pub fn ringway_check(cfg: &Value) -> (i32, String) {
    let path = write_config(cfg);
    let out = Command::new(ringway_bin()).args(["check", "--config"]).arg(&path).output().expect("run ringway check");
    let _ = std::fs::remove_file(&path);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}
