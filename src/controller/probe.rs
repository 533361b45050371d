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
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Accepted statuses.
    pub expect: (u16, u16),
    /// TLS settings, for a TLS backend (the same the workers use).
    pub tls: Option<crate::upstream::UpstreamTls>,
}

/// A probe's outcome.
#[derive(Debug)]
pub struct ProbeResult {
    /// Which backend.
    pub key: BackendKey,
    /// Passed.
    pub ok: bool,
}

/// One probe: GET the path, read the status line.
pub fn probe(t: &Target) -> bool {
    let deadline = Instant::now() + t.timeout;
    let Ok(mut s) = TcpStream::connect_timeout(&t.addr, t.timeout) else { return false };
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    if s.set_read_timeout(Some(left)).is_err() || s.set_write_timeout(Some(left)).is_err() {
        return false;
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-health\r\nConnection: close\r\n\r\n",
        t.path, t.host
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
    (t.expect.0..=t.expect.1).contains(&status)
}

/// The prober's loop: takes new target lists from `targets`, sends results.
pub fn run(targets: Receiver<Vec<Target>>, results: Sender<ProbeResult>) {
    let mut list: Vec<(Target, Instant)> = Vec::new();
    loop {
        let now = Instant::now();
        let next = list.iter().map(|(_, due)| *due).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(now));
        match targets.recv_timeout(wait) {
            Ok(new) => {
                // Keep the schedule of targets that stay; new ones probe at once.
                let now = Instant::now();
                list = new
                    .into_iter()
                    .map(|t| {
                        let due =
                            list.iter().find(|(o, _)| o.key == t.key && o.addr == t.addr).map_or(now, |(_, d)| *d);
                        (t, due)
                    })
                    .collect();
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
            list[i].1 = now + list[i].0.interval;
        }
    }
}
