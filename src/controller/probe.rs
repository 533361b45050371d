//! Active health probes: async tasks on the control side's I/O runtime (one
//! thread, monoio), thousands at once, so a slow or silent backend costs a
//! pending task, never a thread or a round. A probe connects with the data
//! plane's connect code (TLS included), sends one request, parses the
//! answer with the data plane's response parser, reads and discards the
//! whole (bounded) body and closes cleanly. Results go to the control
//! thread, which owns the health state machine and decides flips.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use control::messages::BackendKey;
use crossbeam_channel::Sender;

use crate::conn::Stream;
use crate::http::{BodyKind, HeadLimits, Method};
use crate::upstream::exchange;
use crate::worker::inbox::Inbox;

/// Probes in flight at once, at most (bounds sockets; a fleet of silent
/// backends holds one each until its timeout).
const MAX_IN_FLIGHT: usize = 8192;

/// New targets start this far apart (10,000 a second), so a large fleet's
/// first round is spread rather than one burst of connects.
const START_SPACING: Duration = Duration::from_micros(100);

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
    /// The backend speaks TLS (a probe fails when its settings are
    /// unusable, as the workers' connects do; never a plain fallback).
    pub tls_wanted: bool,
    /// gRPC's health check over HTTP/2 (h2c, or h2 when `tls`).
    pub grpc: bool,
}

impl Target {
    /// The wait before the next probe: the interval while up; while down,
    /// `down_interval` (jittered), or the interval when that is shorter.
    fn every(&self, down: bool) -> Duration {
        if down {
            jittered(self.down_interval, &self.key).min(self.interval)
        } else {
            self.interval
        }
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

/// Longest response body a probe reads (and discards) before closing.
const MAX_PROBE_BODY: usize = 1 << 20;

/// One probe within its timeout: connect, send the request, check the
/// status (and the body, when asked), read the rest of the response (up to
/// 1 MiB), close cleanly. `false` on any failure.
pub async fn probe(t: &Target) -> bool {
    monoio::time::timeout(t.timeout, check(t)).await.unwrap_or(false)
}

async fn check(t: &Target) -> bool {
    if t.tcp_only {
        return monoio::net::TcpStream::connect_addr(t.addr).await.is_ok();
    }
    if t.tls_wanted && t.tls.is_none() {
        return false;
    }
    if t.grpc {
        return check_grpc(t).await;
    }
    let Ok(mut s) = crate::upstream::open(t.addr, t.tls.as_ref()).await else { return false };
    let mut buf = Vec::with_capacity(16 * 1024);
    buf.extend_from_slice(
        format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-health/{}\r\nConnection: close\r\n{}\r\n",
            t.method,
            t.path,
            t.host,
            env!("CARGO_PKG_VERSION"),
            t.headers
        )
        .as_bytes(),
    );
    if !exchange::write_all(&mut s, &mut buf).await {
        return false;
    }
    buf.clear();
    let method = if t.method.eq_ignore_ascii_case("HEAD") { Method::Head } else { Method::Get };
    let Some((status, body)) = read_head(&mut s, &mut buf, method).await else { return false };
    let found = drain(&mut s, &mut buf, body, t.expect_body.as_deref().map(str::as_bytes)).await;
    // Everything was read: the close is a clean FIN (and a close_notify
    // over TLS), never a reset.
    s.close_write().await;
    (t.expect.0..=t.expect.1).contains(&status) && found
}

/// gRPC's standard check: `grpc.health.v1.Health/Check` with an empty
/// `HealthCheckRequest` (all services) over HTTP/2; passes when the answer
/// has `grpc-status: 0` and says SERVING (field 1 = 1).
async fn check_grpc(t: &Target) -> bool {
    use bytes::Bytes;
    const SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];
    let Ok(s) = crate::upstream::open(t.addr, t.tls.as_ref()).await else { return false };
    let Ok(io) = crate::conn::h2io::H2Io::new(s) else { return false };
    let Ok((mut send, conn)) = h2::client::handshake(io).await else { return false };
    monoio::spawn(async move {
        let _ = conn.await;
    });
    let scheme = if t.tls.is_some() { "https" } else { "http" };
    let req = http::Request::post(format!("{scheme}://{}/grpc.health.v1.Health/Check", t.host))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", concat!("ringway-health/", env!("CARGO_PKG_VERSION")))
        .body(());
    let Ok(req) = req else { return false };
    let Ok((response, mut body_out)) = send.send_request(req, false) else { return false };
    // An empty HealthCheckRequest: not compressed, length 0.
    if body_out.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).is_err() {
        return false;
    }
    let Ok(resp) = response.await else { return false };
    let ok_status = |h: &http::HeaderMap| h.get("grpc-status").is_some_and(|v| v == "0");
    if resp.status() != 200 {
        return false;
    }
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = poll_fn(|cx| body.poll_data(cx)).await {
        let Ok(chunk) = chunk else { return false };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > 4096 {
            return false;
        }
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx)).await;
    let status_ok = ok_status(&parts.headers) || matches!(&trailers, Ok(Some(t)) if ok_status(t));
    status_ok && data == SERVING
}

/// The final response's status and framing (1xx answers skipped); what
/// follows the head stays in `buf`.
async fn read_head(s: &mut Stream, buf: &mut Vec<u8>, method: Method) -> Option<(u16, BodyKind)> {
    let mut spans = Vec::new();
    let h = exchange::read_final_head(s, buf, &HeadLimits::default(), method, &mut spans).await?;
    buf.drain(..h.head_len);
    Some((h.status, h.body))
}

/// Reads the body by its framing (up to 1 MiB), looking for `want`;
/// true when `want` (if any) was found.
async fn drain(s: &mut Stream, buf: &mut Vec<u8>, body: BodyKind, want: Option<&[u8]>) -> bool {
    let mut m = BodyMatch { want, found: want.is_none(), tail: Vec::new() };
    exchange::read_body(s, buf, body, MAX_PROBE_BODY, &mut |data| m.feed(data)).await;
    m.found
}

/// Looks for `want` in a body as it streams by, keeping only what a match
/// across reads needs.
struct BodyMatch<'a> {
    want: Option<&'a [u8]>,
    found: bool,
    tail: Vec<u8>,
}

impl BodyMatch<'_> {
    fn feed(&mut self, data: &[u8]) {
        let Some(w) = self.want else { return };
        if self.found || w.is_empty() {
            self.found = true;
            return;
        }
        self.tail.extend_from_slice(data);
        self.found = self.tail.windows(w.len()).any(|x| x == w);
        let cut = self.tail.len().saturating_sub(w.len() - 1);
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

/// One target's schedule.
struct Entry {
    target: Rc<Target>,
    /// Probed on the down schedule.
    down: bool,
    /// When the next probe is due.
    due: Instant,
    /// Tags this entry's live queue slot (older slots are stale).
    slot: u64,
    /// A probe of it is in flight (never two at once).
    busy: Rc<Cell<bool>>,
}

/// Every target's schedule, with a queue ordered by due time (entries
/// whose slot moved on are skipped when they surface).
struct Schedule {
    entries: HashMap<BackendKey, Entry>,
    queue: BinaryHeap<Reverse<(Instant, u64, BackendKey)>>,
    next_slot: u64,
    in_flight: Rc<Cell<usize>>,
    results: Rc<Sender<ProbeResult>>,
}

impl Schedule {
    fn set_due(&mut self, key: &BackendKey, due: Instant) {
        let Some(e) = self.entries.get_mut(key) else { return };
        self.next_slot += 1;
        e.slot = self.next_slot;
        e.due = due;
        self.queue.push(Reverse((due, e.slot, key.clone())));
    }

    /// Takes a new target list: targets that stay keep their schedule and
    /// state; new ones start soon, spaced by `START_SPACING`.
    fn set_targets(&mut self, list: Vec<Target>) {
        let now = Instant::now();
        let mut old = std::mem::take(&mut self.entries);
        let mut start = now;
        for t in list {
            let key = t.key.clone();
            match old.remove(&key) {
                Some(mut e) if e.target.addr == t.addr => {
                    e.target = Rc::new(t);
                    self.entries.insert(key, e);
                }
                _ => {
                    let e = Entry { target: Rc::new(t), down: false, due: start, slot: 0, busy: Rc::default() };
                    self.entries.insert(key.clone(), e);
                    self.set_due(&key, start);
                    start += START_SPACING;
                }
            }
        }
        // Queue slots of kept entries stay valid; removed ones surface as stale.
    }

    /// A backend went down (probe it on its down schedule, from now) or up.
    fn set_health(&mut self, key: &BackendKey, down: bool) {
        let Some(e) = self.entries.get_mut(key) else { return };
        e.down = down;
        let soon = Instant::now() + e.target.every(true);
        if down && soon < e.due {
            self.set_due(key, soon);
        }
    }

    /// Starts every probe that is due (up to the in-flight bound) and
    /// schedules its next; returns when the next one is due.
    fn launch_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some(Reverse((due, slot, _))) = self.queue.peek() {
            if *due > now {
                return Some(*due);
            }
            if self.in_flight.get() >= MAX_IN_FLIGHT {
                // Full: look again shortly (a probe ends within its timeout).
                return Some(now + Duration::from_millis(5));
            }
            let slot = *slot;
            let Some(Reverse((_, _, key))) = self.queue.pop() else { break };
            let Some(e) = self.entries.get(&key) else { continue };
            if e.slot != slot {
                continue;
            }
            if !e.busy.get() {
                self.start(e);
            }
            let next = now + e.target.every(e.down);
            self.set_due(&key, next);
        }
        None
    }

    fn start(&self, e: &Entry) {
        let (target, busy, in_flight, results) =
            (e.target.clone(), e.busy.clone(), self.in_flight.clone(), self.results.clone());
        busy.set(true);
        in_flight.set(in_flight.get() + 1);
        monoio::spawn(async move {
            let ok = probe(&target).await;
            busy.set(false);
            in_flight.set(in_flight.get() - 1);
            let _ = results.send(ProbeResult { key: target.key.clone(), ok });
        });
    }
}

/// What woke the scheduler.
enum Wake {
    Cmd(ProbeCmd),
    Due,
    Closed,
}

/// The prober's loop: takes new target lists and health changes from
/// `cmds`, starts due probes, sends results. A target is probed every
/// `interval` while up and every `down_interval` (jittered) while down.
/// Probes every target on its schedule until the command sender is dropped.
pub async fn schedule(cmds: Inbox<ProbeCmd>, results: Sender<ProbeResult>) {
    let mut s = Schedule {
        entries: HashMap::new(),
        queue: BinaryHeap::new(),
        next_slot: 0,
        in_flight: Rc::default(),
        results: Rc::new(results),
    };
    loop {
        let next = s.launch_due().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(next));
        let mut sleep = std::pin::pin!(sleep);
        let wake = poll_fn(|cx| match cmds.poll_recv(cx) {
            Poll::Ready(Some(c)) => Poll::Ready(Wake::Cmd(c)),
            Poll::Ready(None) => Poll::Ready(Wake::Closed),
            Poll::Pending => sleep.as_mut().poll(cx).map(|()| Wake::Due),
        })
        .await;
        match wake {
            Wake::Cmd(ProbeCmd::Targets(list)) => s.set_targets(list),
            Wake::Cmd(ProbeCmd::Health { key, down }) => s.set_health(&key, down),
            Wake::Due => {}
            Wake::Closed => return,
        }
    }
}
