//! The admin listener: HTTP/1.1 on loopback (by default), parsed with the
//! data plane's own codec, served as async tasks on the control side's I/O
//! runtime (`controller::io`), so long-lived dashboard connections cost a
//! task and a buffer, never a thread. It checks what must hold before
//! anything else (body size, Host and Origin against DNS rebinding, the
//! bearer token), serves the dashboard's embedded files itself, and hands
//! every API request to the control thread — the single writer — and
//! writes back what it answers.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::http::{parse_request, HeadLimits};
use crate::worker::inbox::{inbox, InboxSender};

/// Most admin connections at once (each holds at most one request: a
/// 16 KiB head and a 1 MiB body).
const MAX_CONNECTIONS: usize = 256;
/// Idle and I/O timeout of an admin connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole request (head and body) from its first byte, at most.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);
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
    /// Extra header lines (each ending in CRLF), e.g. a page's security policy.
    pub headers: &'static str,
    /// With 405: the methods the path takes (the `Allow` header).
    pub allow: Option<&'static str>,
}

impl AdminReply {
    /// A JSON reply.
    pub fn json(status: u16, body: &serde_json::Value) -> AdminReply {
        let body = if status == 204 { Vec::new() } else { serde_json::to_vec(body).unwrap_or_default() };
        AdminReply { status, body, content_type: "application/json", etag: None, headers: "", allow: None }
    }

    /// 405 naming the methods the path takes, in the body and in `Allow`.
    pub fn not_allowed(allow: &'static str) -> AdminReply {
        let body = serde_json::json!({"error": "methodNotAllowed", "field": null, "message": format!("use {allow}")});
        AdminReply { allow: Some(allow), ..AdminReply::json(405, &body) }
    }

    pub(crate) fn error(status: u16, error: &str, message: &str) -> AdminReply {
        AdminReply::json(status, &serde_json::json!({"error": error, "field": null, "message": message}))
    }
}

/// Where the control thread sends an answer.
pub type ReplyTx = InboxSender<AdminReply>;

/// A request and where to send its answer.
pub struct AdminCall {
    /// The request.
    pub request: AdminRequest,
    /// The answer goes here (it wakes the waiting connection task).
    pub reply: ReplyTx,
}

/// Listener settings.
#[derive(Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Bearer token, if required.
    pub token: Option<String>,
}

/// Accepts admin connections on the current monoio runtime until the
/// runtime ends (the control side's I/O thread ends with the control loop).
pub async fn serve(listener: std::net::TcpListener, settings: AdminSettings, calls: Sender<AdminCall>) {
    let listener = match listener.set_nonblocking(true).and_then(|()| monoio::net::TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener did not start");
            return;
        }
    };
    let settings = Rc::new(settings);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors or the like: wait rather than spin.
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.get() >= MAX_CONNECTIONS {
            continue;
        }
        open.set(open.get() + 1);
        let (settings, calls, open) = (settings.clone(), calls.clone(), open.clone());
        monoio::spawn(async move {
            connection(stream, &settings, &calls).await;
            open.set(open.get() - 1);
        });
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

/// The reply's bytes: the head, and the body unless the request was HEAD.
fn reply_bytes(r: &AdminReply, close: bool, head_only: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\n{}",
        r.status,
        crate::http::reason_phrase(r.status),
        r.content_type,
        r.body.len(),
        r.headers
    );
    if let Some(g) = r.etag {
        head.push_str(&format!("etag: \"{g}\"\r\n"));
    }
    if r.status == 401 {
        head.push_str("www-authenticate: Bearer\r\n");
    }
    if let Some(allow) = r.allow {
        head.push_str(&format!("allow: {allow}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

async fn write_reply(s: &mut TcpStream, r: &AdminReply, close: bool) -> bool {
    send(s, r, close, false).await
}

async fn send(s: &mut TcpStream, r: &AdminReply, close: bool, head_only: bool) -> bool {
    let bytes = reply_bytes(r, close, head_only);
    matches!(monoio::time::timeout(IO_TIMEOUT, s.write_all(bytes)).await, Ok((Ok(_), _)))
}

/// Reads more bytes into `buf`; false at end of stream, on error, after
/// the idle timeout or past `deadline`.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Option<Instant>) -> bool {
    let chunk = Vec::with_capacity(8192);
    let idle = Instant::now() + IO_TIMEOUT;
    let until = deadline.map_or(idle, |d| d.min(idle));
    match monoio::time::timeout_at(monoio::time::Instant::from_std(until), s.read(chunk)).await {
        Ok((Ok(n), chunk)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// The parts of a request head the checks and the handlers look at.
struct Head {
    method: String,
    target: String,
    host: Option<String>,
    origin: Option<String>,
    authorization: Option<String>,
    content_type: Option<String>,
    if_match: Option<String>,
}

/// The checks that come before any handling: Host and Origin name this
/// listener or localhost (against DNS rebinding), then the token. The
/// dashboard's files need no token (they hold no data; the page asks for it).
fn check(head: &Head, settings: &AdminSettings, path: &str) -> Option<AdminReply> {
    let host_ok = head.host.as_deref().is_none_or(|h| allowed_authority(h, settings.addr));
    let origin_ok = head.origin.as_deref().is_none_or(|o| {
        let a = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
        a.is_some_and(|a| allowed_authority(a.trim_end_matches('/'), settings.addr))
    });
    if !host_ok || !origin_ok {
        return Some(AdminReply::error(403, "forbidden", "Host and Origin must name the admin address or localhost"));
    }
    if super::dashboard::is_page(path) {
        return None;
    }
    let auth_ok = match &settings.token {
        None => true,
        Some(t) => head
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), t.as_bytes())),
    };
    (!auth_ok).then(|| AdminReply::error(401, "unauthorized", "send Authorization: Bearer <token>"))
}

/// Hands a request to the control thread and waits (bounded) for its answer.
async fn ask_control(request: AdminRequest, calls: &Sender<AdminCall>) -> AdminReply {
    let (tx, rx) = inbox();
    // Never block the I/O thread: a full queue is a busy control thread.
    if calls.try_send(AdminCall { request, reply: tx }).is_err() {
        return AdminReply::error(503, "unavailable", "the control thread is busy or shutting down");
    }
    match monoio::time::timeout(IO_TIMEOUT, rx.recv()).await {
        Ok(Some(reply)) => reply,
        _ => AdminReply::error(503, "unavailable", "the control thread did not answer"),
    }
}

/// The head's fields the checks and handlers use, as owned strings.
fn head_of(buf: &[u8], req: &crate::http::RequestHead, headers: &[crate::http::HeaderSpan]) -> Head {
    let text =
        |sp: (u32, u32)| String::from_utf8_lossy(buf.get(sp.0 as usize..sp.1 as usize).unwrap_or(b"")).into_owned();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| {
                buf.get(h.name.0 as usize..h.name.1 as usize).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|h| text(h.value))
    };
    Head {
        method: text(req.method_span),
        target: text(req.path),
        host: header("host"),
        origin: header("origin"),
        authorization: header("authorization"),
        content_type: header("content-type"),
        if_match: header("if-match"),
    }
}

async fn connection(mut s: TcpStream, settings: &AdminSettings, calls: &Sender<AdminCall>) {
    let limits = HeadLimits { max_head_bytes: 16 * 1024, max_headers: 64 };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut headers = Vec::new();
    loop {
        // Head: an idle connection waits IO_TIMEOUT for a first byte; from
        // there the whole request (head and body) has REQUEST_DEADLINE.
        let mut deadline = (!buf.is_empty()).then(|| Instant::now() + REQUEST_DEADLINE);
        let req = loop {
            match parse_request(&buf, &limits, &mut headers) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    write_reply(&mut s, &AdminReply::error(e.status(), "badRequest", e.reason()), true).await;
                    return;
                }
            }
            if !read_more(&mut s, &mut buf, deadline).await {
                return;
            }
            deadline.get_or_insert_with(|| Instant::now() + REQUEST_DEADLINE);
        };
        let close = !req.keep_alive;
        let head = head_of(&buf, &req, &headers);
        let head_only = head.method == "HEAD";
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (head.target.clone(), String::new()),
        };
        // The checks come before anything is buffered for the request: a
        // refused one closes with its body unread.
        if let Some(refused) = check(&head, settings, &path) {
            send(&mut s, &refused, true, head_only).await;
            return;
        }
        // Body.
        let body_len = match req.body {
            crate::http::BodyKind::None => 0,
            crate::http::BodyKind::Length(n) if n as usize <= MAX_BODY => n as usize,
            crate::http::BodyKind::Length(_) => {
                write_reply(&mut s, &AdminReply::error(413, "bodyTooLarge", "the body is over 1 MiB"), true).await;
                return;
            }
            _ => {
                let r = AdminReply::error(411, "lengthRequired", "send a Content-Length body");
                write_reply(&mut s, &r, true).await;
                return;
            }
        };
        while buf.len() < req.head_len + body_len {
            if !read_more(&mut s, &mut buf, deadline).await {
                return;
            }
        }
        let reply = match super::dashboard::page(&head.method, &path) {
            Some(page) => page,
            None => {
                let request = AdminRequest {
                    method: head.method,
                    path,
                    query,
                    body: buf[req.head_len..req.head_len + body_len].to_vec(),
                    content_type: head.content_type,
                    if_match: head.if_match,
                };
                ask_control(request, calls).await
            }
        };
        buf.drain(..req.head_len + body_len);
        if !send(&mut s, &reply, close, head_only).await || close {
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
