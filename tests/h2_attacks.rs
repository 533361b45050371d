//! HTTP/2 attacks, each proven with the raw frame client (support/h2raw.rs)
//! against h2c on one worker: rapid reset, CONTINUATION flood, a 1 MiB
//! header block, SETTINGS and PING floods whose ACKs are never read, a
//! flood of empty DATA frames, a zero window never opened, and a request
//! body that never comes. For each: the connection gets a GOAWAY (or is
//! reset and closed) within a bound, or — for the slow ones — the stream
//! and then the connection are timed out as configured; the backend sees
//! few or none of the attack's requests; ringway's CPU stays bounded
//! during the attack and goes quiet after it; and a fresh client (curl
//! with prior knowledge, in a loop) on the same worker is served during and
//! after. The floods are repeated on fresh connections for `SPAN`, as an
//! attacker would, so that "during" means something. Numbers are printed.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// How long a flood is kept up (on fresh connections as each one ends).
const SPAN: Duration = Duration::from_millis(2000);
/// Longest wait for a GOAWAY / close after an attack connection's last write.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The scene: a victim backend, a probe backend, ringway with h2c, one worker
// ---------------------------------------------------------------------------

struct Scene {
    victim: BackendHandle,
    probe_backend: BackendHandle,
    rw: Ringway,
}

impl Scene {
    /// `victim` serves the attacked route (every host but probe.test);
    /// `settings` are (section, key, value) overrides.
    fn new(victim: Backend, settings: &[(&str, &str, Value)]) -> Scene {
        let victim = victim.named("victim").start();
        let probe_backend = Backend::respond(200, "probe-ok").named("probe").start();
        let mut cfg = config(vec![
            route("probe.test", "ROUND_ROBIN", vec![probe_backend.config()]),
            route("*", "ROUND_ROBIN", vec![victim.config()]),
        ]);
        cfg = set(cfg, "http2", "h2c", json!(true));
        for (section, key, value) in settings {
            cfg = set(cfg, section, key, value.clone());
        }
        let rw = Ringway::start(cfg);
        Scene { victim, probe_backend, rw }
    }

    fn addr(&self) -> SocketAddr {
        self.rw.addr()
    }

    fn pid(&self) -> u32 {
        self.rw.pid()
    }

    /// Lines of ringway's log naming `peer`.
    fn log_lines_for(&self, peer: SocketAddr) -> Vec<String> {
        let p = peer.to_string();
        self.rw.log().lines().filter(|l| l.contains(&p)).map(str::to_string).collect()
    }
}

// ---------------------------------------------------------------------------
// The fresh client: curl with prior knowledge, in a loop
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Probe {
    start: Instant,
    end: Instant,
    status: u16,
    version: String,
    exit: i32,
    stderr: String,
}

struct Prober {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<Probe>>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut out = Vec::new();
            // Bounded: at most 400 probes (each at most 5 s).
            while !s.load(Ordering::SeqCst) && out.len() < 400 {
                out.push(probe(port));
                thread::sleep(Duration::from_millis(20));
            }
            out
        });
        Prober { stop, handle }
    }

    fn finish(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

fn probe(port: u16) -> Probe {
    let start = Instant::now();
    let r = curl_h2c(port, "probe.test", "/probe", &["--max-time", "5"]);
    Probe { start, end: Instant::now(), status: r.status, version: r.http_version, exit: r.exit_code, stderr: r.stderr }
}

/// Every probe was served over HTTP/2 with 200, at least one ran while the
/// attack did (`from`..`to`), and one more right now is served too.
fn check_probes(name: &str, probes: &[Probe], from: Instant, to: Instant, port: u16) {
    let bad: Vec<&Probe> = probes.iter().filter(|p| p.status != 200 || p.version != "2" || p.exit != 0).collect();
    let during = probes.iter().filter(|p| p.end > from && p.start < to).count();
    let slowest = probes.iter().map(|p| p.end - p.start).max().unwrap_or_default();
    eprintln!("{name}: fresh clients: {} probes, {during} during the attack, slowest {slowest:?}", probes.len());
    let why: Vec<&str> = bad.iter().map(|p| p.stderr.as_str()).collect();
    assert!(bad.is_empty(), "{name}: fresh clients not served: {bad:#?} ({why:?})");
    assert!(during >= 1, "{name}: no probe ran during the attack ({} probes)", probes.len());
    let after = probe(port);
    assert!(after.status == 200 && after.version == "2", "{name}: a fresh client after the attack: {after:?}");
}

/// Ringway's CPU over a quiet second (no attack, no probes): nothing left
/// spinning.
fn quiet_cpu_ms(pid: u32) -> u64 {
    let before = cpu_ms(pid);
    thread::sleep(Duration::from_secs(1));
    cpu_ms(pid) - before
}

// ---------------------------------------------------------------------------
// Watching what the server sends on an attack connection
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Watched {
    /// When the first GOAWAY arrived (since the watch began), and it.
    goaway: Option<(Duration, Frame)>,
    rst_streams: usize,
    frames: usize,
    /// When the connection ended, and how (EOF or the error).
    closed: Option<(Duration, String)>,
}

/// Reads frames off `stream` (a clone of the attack connection) until it
/// closes or `limit` passes, so that the server is never blocked writing.
fn watch(mut stream: TcpStream, limit: Duration, closed_flag: Arc<AtomicBool>) -> thread::JoinHandle<Watched> {
    thread::spawn(move || {
        let t = Instant::now();
        let mut w = Watched::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut tmp = vec![0u8; 64 * 1024];
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        while t.elapsed() < limit {
            match stream.read(&mut tmp) {
                Ok(0) => {
                    w.closed = Some((t.elapsed(), "EOF".into()));
                    break;
                }
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => {
                    w.closed = Some((t.elapsed(), e.to_string()));
                    break;
                }
            }
            while buf.len() >= 9 {
                let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    kind: buf[3],
                    flags: buf[4],
                    stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                    payload: buf[9..9 + len].to_vec(),
                };
                buf.drain(..9 + len);
                w.frames += 1;
                match f.kind {
                    GOAWAY if w.goaway.is_none() => w.goaway = Some((t.elapsed(), f)),
                    RST_STREAM => w.rst_streams += 1,
                    _ => {}
                }
            }
        }
        closed_flag.store(true, Ordering::SeqCst);
        w
    })
}

/// One attack connection's story.
#[derive(Debug)]
struct Outcome {
    peer: SocketAddr,
    frames_sent: usize,
    write_error: Option<String>,
    watched: Watched,
}

/// Opens a connection (preface, SETTINGS, the server's SETTINGS ACKed),
/// sends `setup`, then `batch()` after `batch()` (bytes and how many frames
/// they hold) until the server ends the connection or `max_frames` went
/// out; a watcher reads meanwhile. Waits up to `CLOSE_BOUND` after the last
/// write for the connection to end.
fn flood_once(
    addr: SocketAddr,
    setup: &[u8],
    max_frames: usize,
    mut batch: impl FnMut() -> (Vec<u8>, usize),
) -> Outcome {
    let mut c = H2Client::handshake(addr, &[]);
    let peer = c.local_addr();
    let closed = Arc::new(AtomicBool::new(false));
    let watcher = watch(c.stream.try_clone().unwrap(), Duration::from_secs(60), closed.clone());
    let mut frames_sent = 0;
    let mut write_error = None;
    if let Err(e) = c.try_send_raw(setup) {
        write_error = Some(e.to_string());
    }
    while write_error.is_none() && frames_sent < max_frames && !closed.load(Ordering::SeqCst) {
        let (bytes, n) = batch();
        match c.try_send_raw(&bytes) {
            Ok(()) => frames_sent += n,
            Err(e) => write_error = Some(e.to_string()),
        }
    }
    let t = Instant::now();
    while !closed.load(Ordering::SeqCst) && t.elapsed() < CLOSE_BOUND {
        thread::sleep(Duration::from_millis(5));
    }
    // Unblock the watcher if the server never closed.
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
    let watched = watcher.join().unwrap();
    Outcome { peer, frames_sent, write_error, watched }
}

/// Runs `flood_once` on fresh connections for `SPAN` (at least once, at
/// most 40 times) with probes running, and checks every connection got a
/// GOAWAY with one of `codes` and was closed, each within `CLOSE_BOUND`,
/// that ringway logged one warning naming each attacker, that the probes
/// were served, and the CPU. Returns the outcomes.
fn flood(
    name: &str,
    scene: &Scene,
    codes: &[u32],
    max_frames: usize,
    cpu_bound_ms: u64,
    mut one: impl FnMut() -> Outcome,
) -> Vec<Outcome> {
    let pid = scene.pid();
    let prober = Prober::start(scene.addr().port());
    // Let the prober get going, so the attack is measured on its own.
    thread::sleep(Duration::from_millis(100));
    let cpu0 = cpu_ms(pid);
    let rss0 = rss_kb(pid);
    let from = Instant::now();
    let mut outcomes = Vec::new();
    while outcomes.is_empty() || (from.elapsed() < SPAN && outcomes.len() < 40) {
        outcomes.push(one());
    }
    let to = Instant::now();
    let cpu = cpu_ms(pid) - cpu0;
    let rss = rss_kb(pid);
    let probes = prober.finish();
    let quiet = quiet_cpu_ms(pid);

    let frames: usize = outcomes.iter().map(|o| o.frames_sent).sum();
    let goaway_times: Vec<Duration> = outcomes.iter().filter_map(|o| o.watched.goaway.as_ref().map(|g| g.0)).collect();
    let max_goaway = goaway_times.iter().max().copied().unwrap_or_default();
    let first = &outcomes[0];
    eprintln!(
        "{name}: {} connections in {:?}, {frames} frames sent ({} on the first, max {max_frames} each); \
         first: {:?} after {:?}, closed {:?}, write error {:?}; slowest GOAWAY {max_goaway:?}; \
         backend requests {}; ringway CPU {cpu} ms during, {quiet} ms in the quiet second after; RSS {rss0} -> {rss} KiB",
        outcomes.len(),
        to - from,
        first.frames_sent,
        first.watched.goaway.as_ref().map(|g| g.1.describe()),
        first.watched.goaway.as_ref().map(|g| g.0),
        first.watched.closed,
        first.write_error,
        scene.victim.request_count(),
    );
    for (i, o) in outcomes.iter().enumerate() {
        let Some((_, g)) = &o.watched.goaway else {
            panic!("{name}: connection {i} got no GOAWAY after {} frames: {o:?}", o.frames_sent);
        };
        assert!(codes.contains(&g.error_code()), "{name}: connection {i}: {}", g.describe());
        assert!(o.watched.closed.is_some(), "{name}: connection {i} not closed within {CLOSE_BOUND:?}: {o:?}");
        // Writes land in socket buffers long before the server reads them,
        // so frames sent say little; the time to the GOAWAY says more.
        let (t, _) = o.watched.goaway.as_ref().unwrap();
        assert!(*t <= Duration::from_secs(2), "{name}: connection {i}: GOAWAY only after {t:?}");
    }
    // One warning per attacker, naming its address.
    std::thread::sleep(Duration::from_millis(100));
    for o in &outcomes {
        let lines = scene.log_lines_for(o.peer);
        assert_eq!(lines.len(), 1, "{name}: log lines naming {}: {lines:#?}\nlog:\n{}", o.peer, scene.rw.log());
        assert!(lines[0].contains("WARN"), "{name}: not a warning: {}", lines[0]);
    }
    eprintln!("{name}: log: {}", scene.log_lines_for(first.peer)[0]);
    check_probes(name, &probes, from, to, scene.addr().port());
    assert!(scene.probe_backend.request_count() > probes.len(), "{name}: the probes' backend saw too few requests");
    assert!(cpu <= cpu_bound_ms, "{name}: ringway used {cpu} ms of CPU during a {:?} attack", to - from);
    assert!(quiet <= 200, "{name}: ringway used {quiet} ms of CPU in the second after the attack");
    outcomes
}

// ---------------------------------------------------------------------------
// Floods the h2 crate detects: GOAWAY at once
// ---------------------------------------------------------------------------

#[test]
fn rapid_reset_gets_goaway_and_the_backend_sees_few_requests() {
    const MAX: usize = 20_000;
    let scene = Scene::new(Backend::respond(200, "victim"), &[]);
    let addr = scene.addr();
    let outcomes = flood("rapid reset", &scene, &[ENHANCE_YOUR_CALM], MAX * 2, 1000, || {
        // HEADERS (a complete GET) + RST_STREAM(CANCEL), 1,000 pairs a write.
        let mut next = 1u32;
        let block = request_block("GET", "/reset", "victim.test", &[]);
        flood_once(addr, &[], MAX * 2, || {
            let mut out = Vec::with_capacity(1000 * (block.len() + 30));
            for _ in 0..1000 {
                push_frame(&mut out, HEADERS, END_STREAM | END_HEADERS, next, &block);
                push_frame(&mut out, RST_STREAM, 0, next, &u32_payload(CANCEL));
                next += 2;
            }
            (out, 2000)
        })
    });
    let pairs: usize = outcomes.iter().map(|o| o.frames_sent / 2).sum();
    let reached = scene.victim.request_count();
    eprintln!(
        "rapid reset: {pairs} streams opened and reset on {} connections, {reached} reached the backend",
        outcomes.len()
    );
    // h2 lets 20 reset streams through per connection before its GOAWAY;
    // no more than those may be served, or reach the backend.
    for o in &outcomes {
        let g = &o.watched.goaway.as_ref().unwrap().1;
        assert!(
            g.last_stream() <= 2 * 25 + 1,
            "{} streams served before the GOAWAY: {}",
            g.last_stream() / 2 + 1,
            g.describe()
        );
    }
    assert!(reached <= 21 * outcomes.len(), "{reached} reset requests reached the backend ({pairs} sent)");
}

#[test]
fn a_stream_reset_before_ringway_serves_it_never_reaches_the_backend() {
    // Five requests cancelled in the same write that opened them (so h2
    // has seen the RST_STREAM before ringway starts serving the stream),
    // then an ordinary request: only that one may reach the backend.
    let scene = Scene::new(Backend::respond(200, "victim"), &[]);
    let mut c = H2Client::handshake(scene.addr(), &[]);
    let mut out = Vec::new();
    for i in 0..5 {
        let id = c.next_stream_id();
        push_frame(
            &mut out,
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &request_block("GET", &format!("/cancelled/{i}"), "victim.test", &[]),
        );
        push_frame(&mut out, RST_STREAM, 0, id, &u32_payload(CANCEL));
    }
    let id = c.next_stream_id();
    push_frame(&mut out, HEADERS, END_STREAM | END_HEADERS, id, &request_block("GET", "/ok", "victim.test", &[]));
    c.send_raw(&out);
    let r = c.response(id, IO_TIMEOUT);
    assert_eq!(r.status, 200, "{}", r.summary());
    // The cancelled ones would have been started before the last one: give
    // any straggler a moment to arrive (bounded), then count.
    let t = Instant::now();
    while scene.victim.request_count() < 6 && t.elapsed() < Duration::from_millis(500) {
        thread::sleep(Duration::from_millis(10));
    }
    let targets: Vec<String> = scene.victim.requests().iter().map(|r| r.target.clone()).collect();
    eprintln!("reset before served: the backend saw {targets:?}");
    assert_eq!(targets, vec!["/ok".to_string()], "cancelled requests reached the backend");
}

#[test]
fn continuation_flood_gets_goaway() {
    const MAX: usize = 1_000_000;
    let scene = Scene::new(Backend::respond(200, "victim"), &[]);
    let addr = scene.addr();
    flood("CONTINUATION flood", &scene, &[ENHANCE_YOUR_CALM], MAX, 1000, || {
        // HEADERS without END_HEADERS, then empty CONTINUATIONs forever.
        let block = request_block("GET", "/cont", "victim.test", &[("x-a", "b")]);
        let setup = frame(HEADERS, END_STREAM, 1, &block);
        let mut batch = Vec::with_capacity(9 * 10_000);
        for _ in 0..10_000 {
            push_frame(&mut batch, CONTINUATION, 0, 1, &[]);
        }
        flood_once(addr, &setup, MAX, || (batch.clone(), 10_000))
    });
    assert_eq!(scene.victim.request_count(), 0, "a request reached the backend");
}

#[test]
fn a_one_mib_header_block_is_refused() {
    let scene = Scene::new(Backend::respond(200, "victim"), &[]);
    let addr = scene.addr();
    let big = "v".repeat(1 << 20);
    let block = request_block("GET", "/big-head", "victim.test", &[("x-big", &big)]);
    assert!(block.len() > 1 << 20);
    // HEADERS + CONTINUATIONs of 16 KiB, END_HEADERS on the last, written
    // 8 frames at a time so that the server's verdict can cut it short.
    let mut frames = Vec::new();
    let mut pieces = block.chunks(16_384).peekable();
    frames.push(frame(HEADERS, END_STREAM, 1, pieces.next().unwrap()));
    while let Some(p) = pieces.next() {
        frames.push(frame(CONTINUATION, if pieces.peek().is_none() { END_HEADERS } else { 0 }, 1, p));
    }
    let total = frames.len();
    let groups: Vec<(Vec<u8>, usize)> = frames.chunks(8).map(|g| (g.concat(), g.len())).collect();
    let outcomes = flood(
        "1 MiB header block",
        &scene,
        &[ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR],
        total,
        1000,
        || {
            let mut next = groups.iter();
            flood_once(addr, &[], total, || next.next().cloned().unwrap_or_default())
        },
    );
    eprintln!(
        "1 MiB header block: {total} frames in the block; the first connection wrote {}",
        outcomes[0].frames_sent
    );
    assert_eq!(scene.victim.request_count(), 0, "the request reached the backend");
}

#[test]
fn an_empty_data_frame_flood_gets_goaway() {
    const MAX: usize = 1_000_000;
    let scene = Scene::new(Backend::echo(), &[]);
    let addr = scene.addr();
    let outcomes = flood("empty DATA flood", &scene, &[ENHANCE_YOUR_CALM], MAX, 1000, || {
        let setup = frame(HEADERS, END_HEADERS, 1, &request_block("POST", "/data", "victim.test", &[]));
        let mut batch = Vec::with_capacity(9 * 10_000);
        for _ in 0..10_000 {
            push_frame(&mut batch, DATA, 0, 1, &[]);
        }
        flood_once(addr, &setup, MAX, || (batch.clone(), 10_000))
    });
    // The request's head may have gone on; never a complete request.
    assert_eq!(scene.victim.request_count(), 0, "a complete request reached the backend");
    assert!(scene.victim.connections() <= outcomes.len(), "{} backend connections", scene.victim.connections());
}

// ---------------------------------------------------------------------------
// Floods answered by backpressure: SETTINGS and PING with the ACKs unread
// ---------------------------------------------------------------------------

/// Writes `batch` (of `per_batch` frames) again and again, never reading,
/// until the writes block (the server stopped reading: it cannot send its
/// ACKs) or `MAX` frames went out, then a PING now and then, until a write
/// fails: the server closed the connection. It has no streams, so it must
/// idle out (GOAWAY after http2.idleMs, closed once the drain budget for
/// it has passed) — whether or not the flood stalled first. Checks the
/// probes, CPU and memory meanwhile.
fn unread_ack_flood(name: &str, batch: Vec<u8>, per_batch: usize) {
    const MAX: usize = 3_000_000;
    // Long enough for the ACKs to fill the socket buffers first.
    let idle = Duration::from_millis(4000);
    let drain = Duration::from_millis(1000);
    let scene = Scene::new(
        Backend::respond(200, "victim"),
        &[
            ("http2", "idleMs", json!(idle.as_millis() as u64)),
            ("timeouts", "drainMs", json!(drain.as_millis() as u64)),
        ],
    );
    let pid = scene.pid();
    let prober = Prober::start(scene.addr().port());
    thread::sleep(Duration::from_millis(100));
    let cpu0 = cpu_ms(pid);
    let rss0 = rss_kb(pid);
    let mut peak = rss0;
    let from = Instant::now();
    let mut c = H2Client::handshake(scene.addr(), &[]);
    let peer = c.local_addr();
    c.stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let bound = idle + drain + Duration::from_secs(6);
    let ping = frame(PING, 0, 0, &[0; 8]);
    let mut sent = 0;
    let mut last_sample = Instant::now();
    let mut stalled = None;
    let mut closed = None;
    let mut cpu_at_stall = None;
    while from.elapsed() < bound {
        let flooding = stalled.is_none() && sent < MAX;
        match c.try_send_raw(if flooding { &batch } else { &ping }) {
            Ok(()) if flooding => sent += per_batch,
            Ok(()) => thread::sleep(Duration::from_millis(50)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stalled.is_none() {
                    stalled = Some(from.elapsed());
                    cpu_at_stall = Some(cpu_ms(pid) - cpu0);
                }
            }
            Err(e) => {
                closed = Some((from.elapsed(), e.to_string()));
                break;
            }
        }
        if last_sample.elapsed() >= Duration::from_millis(50) {
            peak = peak.max(rss_kb(pid));
            last_sample = Instant::now();
        }
    }
    peak = peak.max(rss_kb(pid));
    let to = Instant::now();
    let cpu = cpu_ms(pid) - cpu0;
    let probes = prober.finish();
    let quiet = quiet_cpu_ms(pid);
    eprintln!(
        "{name}: {sent} frames written; the writes blocked after {stalled:?} (ringway CPU by then {cpu_at_stall:?} ms); \
         closed {closed:?}; ringway CPU {cpu} ms in all, {quiet} ms in the quiet second after; RSS {rss0} -> peak {peak} \
         KiB; backend requests {}",
        scene.victim.request_count()
    );
    eprintln!("{name}: log lines naming the attacker: {:?}", scene.log_lines_for(peer));
    let Some((t_closed, _)) = &closed else {
        panic!("{name}: the connection was still open {bound:?} after it began ({sent} frames written)");
    };
    assert!(*t_closed >= idle - Duration::from_millis(100), "{name}: closed after only {t_closed:?}");
    // Backpressure: a peer that reads none of its ACKs is not read either.
    assert!(stalled.is_some(), "{name}: {sent} frames written and ringway still read on");
    check_probes(name, &probes, from, to, scene.addr().port());
    assert!(scene.probe_backend.request_count() > probes.len(), "{name}: the probes' backend saw too few requests");
    assert!(cpu <= 3000, "{name}: ringway used {cpu} ms of CPU");
    assert!(quiet <= 200, "{name}: ringway used {quiet} ms of CPU in the second after the attack");
    assert!(peak.saturating_sub(rss0) < 32 * 1024, "{name}: RSS grew from {rss0} to {peak} KiB");
    assert_eq!(scene.victim.request_count(), 0);
}

#[test]
fn a_settings_flood_with_unread_acks_is_held_back_and_closed() {
    let mut batch = Vec::new();
    for _ in 0..1000 {
        push_frame(&mut batch, SETTINGS, 0, 0, &settings_payload(&[(SETTINGS_HEADER_TABLE_SIZE, 4096)]));
    }
    unread_ack_flood("SETTINGS flood", batch, 1000);
}

#[test]
fn a_ping_flood_with_unread_acks_is_held_back_and_closed() {
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        push_frame(&mut batch, PING, 0, 0, &i.to_be_bytes());
    }
    unread_ack_flood("PING flood", batch, 1000);
}

// ---------------------------------------------------------------------------
// Slow attacks: the configured timeouts end them
// ---------------------------------------------------------------------------

/// Timeouts for the slow attacks: any wait for the client 2 s (the
/// request path), an HTTP/2 connection without streams 2 s.
const CLIENT_IDLE: Duration = Duration::from_millis(2000);
const H2_IDLE: Duration = Duration::from_millis(2000);

fn slow_scene(victim: Backend) -> Scene {
    Scene::new(
        victim,
        &[
            ("timeouts", "idleMs", json!(CLIENT_IDLE.as_millis() as u64)),
            ("timeouts", "drainMs", json!(2000)),
            ("http2", "idleMs", json!(H2_IDLE.as_millis() as u64)),
        ],
    )
}

/// Reads `c` until `stream` is reset or answered (and the answer's status),
/// then until the connection's GOAWAY and close; the times of each.
struct SlowEnd {
    stream_end: Option<(Duration, String)>,
    goaway: Option<(Duration, Frame)>,
    closed: Option<(Duration, ReadEnd)>,
    status: u16,
    data_bytes: usize,
}

fn follow(c: &mut H2Client, stream: u32, from: Instant, limit: Duration) -> SlowEnd {
    let mut end = SlowEnd { stream_end: None, goaway: None, closed: None, status: 0, data_bytes: 0 };
    while from.elapsed() < limit {
        let left = limit.saturating_sub(from.elapsed());
        match c.read_frame(left) {
            Ok(f) => match f.kind {
                HEADERS if f.stream == stream => {
                    let fields = c.decode(f.content());
                    if let Some((_, v)) = fields.iter().find(|(n, _)| n == ":status") {
                        end.status = v.parse().unwrap_or(0);
                    }
                    if f.has(END_STREAM) && end.stream_end.is_none() {
                        end.stream_end = Some((from.elapsed(), format!("answered {}", end.status)));
                    }
                }
                HEADERS => {
                    c.decode(f.content());
                }
                DATA if f.stream == stream => {
                    end.data_bytes += f.payload.len();
                    if f.has(END_STREAM) && end.stream_end.is_none() {
                        end.stream_end = Some((from.elapsed(), format!("answered {} with a body", end.status)));
                    }
                }
                RST_STREAM if f.stream == stream && end.stream_end.is_none() => {
                    end.stream_end = Some((from.elapsed(), f.describe()));
                }
                GOAWAY if end.goaway.is_none() => end.goaway = Some((from.elapsed(), f)),
                _ => {}
            },
            Err(e) => {
                end.closed = Some((from.elapsed(), e));
                break;
            }
        }
    }
    end
}

/// Runs a slow attack: `open` sets up the stream on `c`; the stream must
/// end (reset or an error answer) within `stream_by`, then the connection
/// get its GOAWAY and close within `H2_IDLE` (+ slack) after that.
fn slow_attack(name: &str, scene: &Scene, settings: &[(u16, u32)], open: impl FnOnce(&mut H2Client) -> u32) -> SlowEnd {
    let pid = scene.pid();
    let prober = Prober::start(scene.addr().port());
    thread::sleep(Duration::from_millis(100));
    let cpu0 = cpu_ms(pid);
    let rss0 = rss_kb(pid);
    let from = Instant::now();
    let mut c = H2Client::handshake(scene.addr(), settings);
    let stream = open(&mut c);
    let limit = CLIENT_IDLE + H2_IDLE + Duration::from_secs(10);
    let end = follow(&mut c, stream, from, limit);
    let to = Instant::now();
    let cpu = cpu_ms(pid) - cpu0;
    let rss = rss_kb(pid);
    let probes = prober.finish();
    let quiet = quiet_cpu_ms(pid);
    eprintln!(
        "{name}: stream ended {:?}; GOAWAY {:?}; closed {:?}; status {}, {} DATA bytes; ringway CPU {cpu} ms, \
         {quiet} ms in the quiet second after; RSS {rss0} -> {rss} KiB; backend requests {}, connections {}",
        end.stream_end,
        end.goaway.as_ref().map(|(t, f)| (t, f.describe())),
        end.closed,
        end.status,
        end.data_bytes,
        scene.victim.request_count(),
        scene.victim.connections()
    );
    let Some((t_stream, _)) = &end.stream_end else {
        panic!("{name}: the stream was never ended (reset or answered) within {limit:?}");
    };
    assert!(
        *t_stream >= CLIENT_IDLE - Duration::from_millis(100),
        "{name}: the stream ended early, after {t_stream:?}"
    );
    assert!(*t_stream <= CLIENT_IDLE + Duration::from_secs(5), "{name}: the stream ended only after {t_stream:?}");
    let Some((t_goaway, g)) = &end.goaway else { panic!("{name}: no GOAWAY within {limit:?}") };
    assert_eq!(g.error_code(), NO_ERROR, "{name}: {}", g.describe());
    assert!(*t_goaway >= *t_stream + H2_IDLE - Duration::from_millis(100), "{name}: GOAWAY after {t_goaway:?}");
    assert!(*t_goaway <= *t_stream + H2_IDLE + Duration::from_secs(5), "{name}: GOAWAY only after {t_goaway:?}");
    assert!(matches!(end.closed, Some((_, ReadEnd::Closed(_)))), "{name}: not closed: {:?}", end.closed);
    check_probes(name, &probes, from, to, scene.addr().port());
    assert!(scene.probe_backend.request_count() > probes.len(), "{name}: the probes' backend saw too few requests");
    assert!(cpu <= 1500, "{name}: ringway used {cpu} ms of CPU over {:?}", to - from);
    assert!(quiet <= 200, "{name}: ringway used {quiet} ms of CPU in the second after the attack");
    assert!(rss.saturating_sub(rss0) < 32 * 1024, "{name}: RSS grew from {rss0} to {rss} KiB");
    end
}

#[test]
fn a_zero_window_never_opened_is_timed_out() {
    // A large answer the client will never take a byte of.
    let scene = slow_scene(Backend::large(8 << 20));
    let end =
        slow_attack("zero window", &scene, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], |c| c.get("/large", "victim.test"));
    assert_eq!(end.status, 200, "the response head is not flow-controlled");
    assert_eq!(end.data_bytes, 0, "DATA beyond a zero window");
    assert_eq!(scene.victim.request_count(), 1);
}

#[test]
fn a_request_body_that_never_comes_is_timed_out() {
    let scene = slow_scene(Backend::echo());
    // HEADERS without END_STREAM, then nothing: no DATA, no END_STREAM.
    let end = slow_attack("stream never completed", &scene, &[], |c| {
        c.request("POST", "/upload", "victim.test", &[("content-type", "x/y")], false)
    });
    assert!(end.status == 0 || end.status >= 400, "answered {} to a request whose body never came", end.status);
    assert_eq!(scene.victim.request_count(), 0, "an incomplete request reached the backend as complete");
}
