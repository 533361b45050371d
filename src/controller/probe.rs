//! Active health probes, on a helper thread of the control thread so that a
//! slow or silent backend never delays the control loop. Each round probes
//! the due targets in parallel (bounded fan-out) with blocking sockets and a
//! timeout, and reports each result; the control thread owns the state
//! machine and decides flips.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use control::messages::BackendKey;
use crossbeam_channel::{Receiver, Sender};

/// Probes run at once, at most.
const FAN_OUT: usize = 64;

/// One backend to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which backend.
    pub key: BackendKey,
    /// Where.
    pub addr: SocketAddr,
    /// Host header to send.
    pub host: String,
    /// Path to GET.
    pub path: String,
    /// How often.
    pub interval: Duration,
    /// How often while the backend is down (jittered), so a restarted
    /// backend is back within about `rise` of these.
    pub down_interval: Duration,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Accepted statuses.
    pub expect: (u16, u16),
    /// Connect only.
    pub tcp_only: bool,
    /// A substring the body must contain.
    pub expect_body: Option<String>,
    /// Extra request headers, each `name: value\r\n`.
    pub headers: String,
    /// `GET` or `HEAD`.
    pub method: String,
    /// TLS settings, for a TLS backend (the same the workers use).
    pub tls: Option<crate::upstream::UpstreamTls>,
}

impl Target {
    /// The wait between probes while down: `down_interval` (jittered), or
    /// the normal interval when that is already shorter.
    fn down_every(&self, key: &BackendKey) -> Duration {
        jittered(self.down_interval, key).min(self.interval)
    }
}

/// What the control thread tells the prober.
#[derive(Debug)]
pub enum ProbeCmd {
    /// Probe these (schedules of targets that stay are kept).
    Targets(Vec<Target>),
    /// A backend went down (probe it on its down schedule, starting now) or up.
    Health {
        /// Which backend.
        key: BackendKey,
        /// Down now.
        down: bool,
    },
}

/// A probe's outcome.
#[derive(Debug)]
pub struct ProbeResult {
    /// Which backend.
    pub key: BackendKey,
    /// Passed.
    pub ok: bool,
}

/// Longest response a probe reads (and discards) before closing.
const MAX_PROBE_BODY: usize = 1 << 20;

/// One probe: GET the path, check the status line, then read and discard
/// the rest of the response (up to 1 MiB, within the timeout) so the
/// backend sees a clean close, not a reset.
pub fn probe(t: &Target) -> bool {
    let deadline = Instant::now() + t.timeout;
    let Ok(mut s) = TcpStream::connect_timeout(&t.addr, t.timeout) else { return false };
    if t.tcp_only {
        return true;
    }
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    if s.set_read_timeout(Some(left)).is_err() || s.set_write_timeout(Some(left)).is_err() {
        return false;
    }
    let req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-health/{}\r\nConnection: close\r\n{}\r\n",
        t.method,
        t.path,
        t.host,
        env!("CARGO_PKG_VERSION"),
        t.headers
    );
    match &t.tls {
        None => status_ok(&mut s, t, req.as_bytes(), deadline),
        Some(tls) => {
            let Ok(conn) = rustls::ClientConnection::new(tls.config.clone(), tls.name.clone()) else { return false };
            let mut s = rustls::StreamOwned::new(conn, s);
            status_ok(&mut s, t, req.as_bytes(), deadline)
        }
    }
}

/// Sends the probe request and checks the status line.
fn status_ok<S: Read + Write>(s: &mut S, t: &Target, req: &[u8], deadline: Instant) -> bool {
    if s.write_all(req).is_err() || s.flush().is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) => return false,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
    let line = &buf[..n];
    if !(line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 ")) {
        return false;
    }
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let status = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    let found = drain(s, deadline, t.expect_body.as_deref().map(str::as_bytes), &buf[..n]);
    (t.expect.0..=t.expect.1).contains(&status) && found
}

/// Reads until the backend closes (it was asked to), 1 MiB, or the
/// deadline; true when `want` (if any) appears in the body. `first` is
/// what was read already (the status line and maybe more).
fn drain<S: Read>(s: &mut S, deadline: Instant, want: Option<&[u8]>, first: &[u8]) -> bool {
    let mut body = BodyMatch { want, head_done: false, found: want.is_none(), tail: Vec::new() };
    body.feed(first);
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0;
    while total < MAX_PROBE_BODY && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                body.feed(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    body.found
}

/// Looks for `want` in a response's body as it streams by, keeping only
/// what a match across reads (or the end of the head) needs.
struct BodyMatch<'a> {
    want: Option<&'a [u8]>,
    head_done: bool,
    found: bool,
    tail: Vec<u8>,
}

impl BodyMatch<'_> {
    fn feed(&mut self, data: &[u8]) {
        if self.found {
            return;
        }
        self.tail.extend_from_slice(data);
        if !self.head_done {
            match self.tail.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) => {
                    self.tail.drain(..i + 4);
                    self.head_done = true;
                }
                None => {
                    let cut = self.tail.len().saturating_sub(3);
                    self.tail.drain(..cut);
                    return;
                }
            }
        }
        let Some(w) = self.want else { return };
        self.found = self.tail.windows(w.len()).any(|x| x == w);
        let cut = self.tail.len().saturating_sub(w.len().saturating_sub(1));
        self.tail.drain(..cut);
    }
}

/// `d` ± 10 %, varied per backend and round, so a fleet that went down
/// together is not probed in lockstep.
fn jittered(d: Duration, key: &BackendKey) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Instant::now().hash(&mut h);
    let f = 0.9 + (h.finish() % 2001) as f64 / 10_000.0;
    d.mul_f64(f)
}

/// The prober's loop: takes new target lists and health changes from
/// `cmds`, sends results. A target is probed every `interval` while up and
/// every `down_interval` (jittered) while down.
pub fn run(cmds: Receiver<ProbeCmd>, results: Sender<ProbeResult>) {
    // (target, next due, down)
    let mut list: Vec<(Target, Instant, bool)> = Vec::new();
    loop {
        let now = Instant::now();
        let next = list.iter().map(|(_, due, _)| *due).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(now));
        match cmds.recv_timeout(wait) {
            Ok(ProbeCmd::Targets(new)) => {
                // Keep the schedule of targets that stay; new ones probe at once.
                let now = Instant::now();
                list = new
                    .into_iter()
                    .map(|t| {
                        let old = list.iter().find(|(o, _, _)| o.key == t.key && o.addr == t.addr);
                        let (due, down) = old.map_or((now, false), |(_, d, down)| (*d, *down));
                        (t, due, down)
                    })
                    .collect();
                continue;
            }
            Ok(ProbeCmd::Health { key, down }) => {
                if let Some(entry) = list.iter_mut().find(|(t, _, _)| t.key == key) {
                    entry.2 = down;
                    if down {
                        let soon = Instant::now() + entry.0.down_every(&key);
                        entry.1 = entry.1.min(soon);
                    }
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let due: Vec<usize> = (0..list.len()).filter(|&i| list[i].1 <= now).collect();
        for chunk in due.chunks(FAN_OUT) {
            let outcomes: Vec<(usize, bool)> = std::thread::scope(|s| {
                let hs: Vec<_> = chunk
                    .iter()
                    .map(|&i| {
                        let t = &list[i].0;
                        s.spawn(move || (i, probe(t)))
                    })
                    .collect();
                hs.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (i, ok) in outcomes {
                if results.send(ProbeResult { key: list[i].0.key.clone(), ok }).is_err() {
                    return;
                }
            }
        }
        let now = Instant::now();
        for &i in &due {
            let (t, next, down) = &mut list[i];
            *next = now + if *down { t.down_every(&t.key) } else { t.interval };
        }
    }
}
