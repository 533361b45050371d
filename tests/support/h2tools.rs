//! HTTP/2 client tools and process probes for the HTTP/2 suites: `curl`
//! over h2c with prior knowledge (`curl_h2c`), `h2load` (`h2load`,
//! `H2loadSummary`), `nghttp` (`nghttp`), and ringway's CPU time and RSS
//! from /proc (`cpu_ms`, `rss_kb`). scripts/test.sh installs curl and
//! nghttp2-client (h2load, nghttp). Every subprocess is killed after a
//! timeout.

use std::process::Command;
use std::time::Duration;

use super::ringway::TempDir;
use super::tls::{run_tool, CurlResult, ToolOutput, TOOL_TIMEOUT};

/// `curl --http2-prior-knowledge http://HOST:PORT/PATH` with HOST resolved
/// to 127.0.0.1 (so `:authority` is `HOST:PORT`), then `extra` arguments;
/// 10 s at most.
pub fn curl_h2c(port: u16, host: &str, path: &str, extra: &[&str]) -> CurlResult {
    let dir = TempDir::new("curl-h2c");
    let (head_path, body_path) = (dir.join("head"), dir.join("body"));
    let slash = if path.starts_with('/') { "" } else { "/" };
    let url = format!("http://{host}:{port}{slash}{path}");
    let resolve = format!("{host}:{port}:127.0.0.1");
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--http2-prior-knowledge", "--max-time", "10", "--resolve", &resolve])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(extra)
        .arg(&url);
    let out = run_tool(&mut cmd, b"", TOOL_TIMEOUT + Duration::from_secs(5));
    curl_result(&out, &head_path, &body_path)
}

/// Reads what a curl run with `-D HEAD -o BODY -w '%{http_code} %{http_version}'` left.
pub fn curl_result(out: &ToolOutput, head_path: &std::path::Path, body_path: &std::path::Path) -> CurlResult {
    let written = out.stdout_text();
    let mut w = written.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let heads = std::fs::read(head_path).unwrap_or_default();
    let heads = String::from_utf8_lossy(&heads);
    let last = heads.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    let http_version = match last.split(' ').next().and_then(|v| v.strip_prefix("HTTP/")) {
        Some(v) => v.to_string(),
        None => w.next().filter(|v| *v != "0").unwrap_or("").to_string(),
    };
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(body_path).unwrap_or_default();
    CurlResult {
        status,
        headers,
        body,
        http_version,
        exit_code: if out.timed_out { -1 } else { out.exit_code.unwrap_or(-1) },
        stderr: out.stderr.clone(),
    }
}

/// What h2load's summary said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2loadSummary {
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
}

/// Runs `h2load ARGS` (killed after `timeout`); its output and summary
/// (all zeros when it printed none).
pub fn h2load(args: &[&str], timeout: Duration) -> (ToolOutput, H2loadSummary) {
    let out = run_tool(Command::new("h2load").args(args), b"", timeout);
    let text = out.stdout_text();
    let mut s = H2loadSummary::default();
    // requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout
    // status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
    for line in text.lines() {
        let line = line.trim();
        let fields = |rest: &str| -> Vec<(u64, String)> {
            rest.split(',')
                .filter_map(|p| {
                    let mut it = p.split_whitespace();
                    Some((it.next()?.parse().ok()?, it.next()?.to_string()))
                })
                .collect()
        };
        if let Some(rest) = line.strip_prefix("requests:") {
            for (n, what) in fields(rest) {
                match what.as_str() {
                    "total" => s.total = n,
                    "started" => s.started = n,
                    "done" => s.done = n,
                    "succeeded" => s.succeeded = n,
                    "failed" => s.failed = n,
                    "errored" => s.errored = n,
                    "timeout" => s.timeout = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            for (n, what) in fields(rest) {
                match what.as_str() {
                    "2xx" => s.s2xx = n,
                    "3xx" => s.s3xx = n,
                    "4xx" => s.s4xx = n,
                    "5xx" => s.s5xx = n,
                    _ => {}
                }
            }
        }
    }
    (out, s)
}

/// Runs `nghttp ARGS` (killed after `timeout`).
pub fn nghttp(args: &[&str], timeout: Duration) -> ToolOutput {
    run_tool(Command::new("nghttp").args(args), b"", timeout)
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// CPU time (user + system) process `pid` used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The command name may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')').expect("no ')' in /proc/PID/stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 here (state is field 3).
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

/// Resident set size of process `pid`, in KiB (VmRSS).
pub fn rss_kb(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}
