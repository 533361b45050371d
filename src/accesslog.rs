//! The access log: JSON lines, off by default, never blocking a worker.
//!
//! Each worker appends lines to its own buffer; a full buffer (or a 100 ms
//! tick, while there is something to write) is handed to the writer thread
//! over a bounded channel, and the writer hands emptied buffers back, so in
//! steady state no line allocates. When the writer falls behind, a worker
//! drops the batch and counts it rather than wait.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Flush a worker's buffer once it holds this much.
const FLUSH_BYTES: usize = 32 * 1024;
/// Batches in flight to the writer before workers start dropping.
const QUEUE: usize = 64;

/// The channels a worker uses to reach the writer thread.
#[derive(Clone)]
pub struct LogSink {
    tx: Sender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
}

/// Starts the writer thread for `path` (`-` is standard output). The
/// thread ends once every sink is dropped and the queue is written: join
/// it at exit so no line is lost.
pub fn start(path: &Path) -> io::Result<(LogSink, std::thread::JoinHandle<()>)> {
    let mut out: Box<dyn Write + Send> = if path == Path::new("-") {
        Box::new(io::stdout())
    } else {
        Box::new(OpenOptions::new().create(true).append(true).open(path)?)
    };
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
    let (free_tx, free) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
    let handle = std::thread::Builder::new().name("ringway-accesslog".into()).spawn(move || {
        for mut batch in rx {
            if let Err(e) = out.write_all(&batch).and_then(|_| out.flush()) {
                tracing::warn!(error = %e, "access log write failed");
            }
            batch.clear();
            let _ = free_tx.try_send(batch);
        }
    })?;
    Ok((LogSink { tx, free }, handle))
}

/// One worker's side of the log.
pub struct WorkerLog {
    sink: LogSink,
    buf: RefCell<Vec<u8>>,
    /// Batches dropped because the writer was behind.
    pub dropped: Cell<u64>,
}

impl WorkerLog {
    /// A worker's log over a sink.
    pub fn new(sink: LogSink) -> WorkerLog {
        WorkerLog { sink, buf: RefCell::new(Vec::with_capacity(FLUSH_BYTES * 2)), dropped: Cell::new(0) }
    }

    /// Appends a finished line; flushes when the buffer is full.
    pub fn push(&self, line: &[u8]) {
        let full = {
            let mut b = self.buf.borrow_mut();
            b.extend_from_slice(line);
            b.len() >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// The last flush, at exit: waits (bounded) for room in the queue
    /// instead of dropping the batch.
    pub fn flush_final(&self) {
        let batch = std::mem::take(&mut *self.buf.borrow_mut());
        if !batch.is_empty() && self.sink.tx.send_timeout(batch, std::time::Duration::from_secs(5)).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Hands the buffer to the writer (never waits).
    pub fn flush(&self) {
        let mut b = self.buf.borrow_mut();
        if b.is_empty() {
            return;
        }
        let next = self.sink.free.try_recv().unwrap_or_else(|_| Vec::with_capacity(FLUSH_BYTES * 2));
        let batch = std::mem::replace(&mut *b, next);
        match self.sink.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(mut batch)) | Err(TrySendError::Disconnected(mut batch)) => {
                self.dropped.set(self.dropped.get() + 1);
                batch.clear();
                *b = batch;
            }
        }
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f..=0xff => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xf) as usize]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

/// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn push_time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Starts a line with what is known once the head is parsed.
pub fn begin(line: &mut Vec<u8>, now: SystemTime, request_id: &[u8], client: SocketAddr, method: &[u8], path: &[u8]) {
    line.clear();
    line.extend_from_slice(b"{\"time\":\"");
    push_time(line, now);
    line.extend_from_slice(b"\",\"requestId\":");
    push_json_str(line, request_id);
    let _ = write!(line, ",\"client\":\"{client}\",\"method\":");
    push_json_str(line, method);
    line.extend_from_slice(b",\"path\":");
    push_json_str(line, path);
}

/// The connection's facts for its log lines: the protocol (`h1`, `h2`)
/// and, over TLS, version and SNI.
#[derive(Clone, Copy, Debug)]
pub struct ConnFields<'a> {
    /// `h1` or `h2`.
    pub protocol: &'a str,
    /// TLS facts, over TLS.
    pub tls: Option<TlsFields<'a>>,
}

/// A TLS connection's facts for its log lines: version and SNI.
#[derive(Clone, Copy, Debug)]
pub struct TlsFields<'a> {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'a str,
    /// The name the client sent, if any.
    pub sni: Option<&'a str>,
}

/// Ends a line with the outcome, the protocol (and, on TLS connections,
/// the version and SNI).
pub fn finish(
    line: &mut Vec<u8>,
    status: u16,
    backend: Option<&str>,
    bytes: u64,
    duration_us: u64,
    conn: ConnFields<'_>,
) {
    let _ = write!(line, ",\"status\":{status},\"backend\":");
    match backend {
        Some(b) => push_json_str(line, b.as_bytes()),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"protocol\":");
    push_json_str(line, conn.protocol.as_bytes());
    if let Some(t) = conn.tls {
        line.extend_from_slice(b",\"tls\":");
        push_json_str(line, t.version.as_bytes());
        line.extend_from_slice(b",\"sni\":");
        match t.sni {
            Some(n) => push_json_str(line, n.as_bytes()),
            None => line.extend_from_slice(b"null"),
        }
    }
    let _ = writeln!(line, ",\"bytes\":{bytes},\"durationUs\":{duration_us}}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_is_json() {
        let mut l = Vec::new();
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        begin(&mut l, t, b"abc", "127.0.0.1:5".parse().expect("addr"), b"GET", b"/a\"b");
        let tls = Some(TlsFields { version: "TLSv1.3", sni: Some("a.test") });
        finish(&mut l, 200, Some("n1"), 12, 345, ConnFields { protocol: "h2", tls });
        let v: serde_json::Value = serde_json::from_slice(&l).expect("json");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["backend"], "n1");
        assert_eq!(v["durationUs"], 345);
        assert_eq!(v["tls"], "TLSv1.3");
        assert_eq!(v["sni"], "a.test");
        assert_eq!(v["protocol"], "h2");
    }
}
