//! The admin listener: HTTP/1.1 on loopback (by default), parsed with the
//! data plane's own codec. It checks what must hold before anything else
//! (body size, the bearer token, Host and Origin against DNS rebinding),
//! then hands the request to the control thread — the single writer — and
//! writes back what it answers. A thread per connection, bounded: admin
//! traffic is a trickle, and blocking I/O here never touches a worker.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::http::{parse_request, HeadLimits};

/// Most admin connections at once.
const MAX_CONNECTIONS: usize = 64;
/// Idle and I/O timeout of an admin connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body.
pub const MAX_BODY: usize = control::api::MAX_BODY;

/// A parsed admin request, owned, on its way to the control thread.
#[derive(Debug)]
pub struct AdminRequest {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Query (no `?`).
    pub query: String,
    /// Body.
    pub body: Vec<u8>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// If-Match.
    pub if_match: Option<String>,
}

/// The control thread's answer.
#[derive(Debug)]
pub struct AdminReply {
    /// Status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Content type of the body.
    pub content_type: &'static str,
    /// ETag generation.
    pub etag: Option<u64>,
}

impl AdminReply {
    /// A JSON reply.
    pub fn json(status: u16, body: &serde_json::Value) -> AdminReply {
        let body = if status == 204 { Vec::new() } else { serde_json::to_vec(body).unwrap_or_default() };
        AdminReply { status, body, content_type: "application/json", etag: None }
    }

    fn error(status: u16, error: &str, message: &str) -> AdminReply {
        AdminReply::json(status, &serde_json::json!({"error": error, "field": null, "message": message}))
    }
}

/// A request and where to send its answer.
pub struct AdminCall {
    /// The request.
    pub request: AdminRequest,
    /// The answer goes here.
    pub reply: Sender<AdminReply>,
}

/// Listener settings.
#[derive(Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Bearer token, if required.
    pub token: Option<String>,
}

/// Accepts admin connections until the channel to the control thread closes.
pub fn serve(listener: TcpListener, settings: AdminSettings, calls: Sender<AdminCall>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (settings, calls, open2) = (settings.clone(), calls.clone(), open.clone());
        let spawned = std::thread::Builder::new().name("ringway-admin-conn".into()).spawn(move || {
            connection(stream, &settings, &calls);
            open2.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Constant-time comparison of two byte strings.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Whether a Host or Origin authority names this admin listener or localhost.
fn allowed_authority(authority: &str, admin: SocketAddr) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == admin.ip(),
        Err(_) => false,
    }
}

fn write_reply(s: &mut TcpStream, r: &AdminReply, close: bool) -> bool {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\n",
        r.status,
        crate::http::reason_phrase(r.status),
        r.content_type,
        r.body.len()
    );
    if let Some(g) = r.etag {
        head.push_str(&format!("etag: \"{g}\"\r\n"));
    }
    if r.status == 401 {
        head.push_str("www-authenticate: Bearer\r\n");
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).is_ok() && s.write_all(&r.body).is_ok()
}

fn connection(mut s: TcpStream, settings: &AdminSettings, calls: &Sender<AdminCall>) {
    if s.set_read_timeout(Some(IO_TIMEOUT)).is_err() || s.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let limits = HeadLimits { max_head_bytes: 16 * 1024, max_headers: 64 };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut headers = Vec::new();
    loop {
        // Head.
        let req = loop {
            match parse_request(&buf, &limits, &mut headers) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    write_reply(&mut s, &AdminReply::error(e.status(), "badRequest", e.reason()), true);
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        };
        let close = !req.keep_alive;
        // Body.
        let body_len = match req.body {
            crate::http::BodyKind::None => 0,
            crate::http::BodyKind::Length(n) if n as usize <= MAX_BODY => n as usize,
            crate::http::BodyKind::Length(_) => {
                write_reply(&mut s, &AdminReply::error(413, "bodyTooLarge", "the body is over 1 MiB"), true);
                return;
            }
            _ => {
                write_reply(&mut s, &AdminReply::error(411, "lengthRequired", "send a Content-Length body"), true);
                return;
            }
        };
        while buf.len() < req.head_len + body_len {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        let text =
            |sp: (u32, u32)| String::from_utf8_lossy(buf.get(sp.0 as usize..sp.1 as usize).unwrap_or(b"")).into_owned();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| {
                    buf.get(h.name.0 as usize..h.name.1 as usize)
                        .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                })
                .map(|h| text(h.value))
        };
        // Checks that come before any handling.
        let host_ok = header("host").is_none_or(|h| allowed_authority(&h, settings.addr));
        let origin_ok = header("origin").is_none_or(|o| {
            let a = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
            a.is_some_and(|a| allowed_authority(a.trim_end_matches('/'), settings.addr))
        });
        let auth_ok = match &settings.token {
            None => true,
            Some(t) => header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(|x| x.trim().to_string()))
                .is_some_and(|given| same(given.as_bytes(), t.as_bytes())),
        };
        let target = text(req.path);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let reply = if !host_ok || !origin_ok {
            AdminReply::error(403, "forbidden", "Host and Origin must name the admin address or localhost")
        } else if !auth_ok {
            AdminReply::error(401, "unauthorized", "send Authorization: Bearer <token>")
        } else {
            let request = AdminRequest {
                method: text(req.method_span),
                path,
                query,
                body: buf[req.head_len..req.head_len + body_len].to_vec(),
                content_type: header("content-type"),
                if_match: header("if-match"),
            };
            let (tx, rx) = crossbeam_channel::bounded(1);
            if calls.send(AdminCall { request, reply: tx }).is_err() {
                AdminReply::error(503, "unavailable", "ringway is shutting down")
            } else {
                rx.recv_timeout(IO_TIMEOUT)
                    .unwrap_or_else(|_| AdminReply::error(503, "unavailable", "the control thread did not answer"))
            }
        };
        let done = req.head_len + body_len;
        buf.drain(..done);
        if !write_reply(&mut s, &reply, close) || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let admin: SocketAddr = "127.0.0.1:9901".parse().expect("addr");
        assert!(allowed_authority("localhost:9901", admin));
        assert!(allowed_authority("127.0.0.1:9901", admin));
        assert!(allowed_authority("[::1]:9901", admin));
        assert!(!allowed_authority("evil.example:9901", admin));
        assert!(!allowed_authority("10.0.0.1", admin));
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
