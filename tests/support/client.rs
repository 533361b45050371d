//! The raw HTTP/1.1 client: `Client` (one connection with exact-byte
//! control), `Response`, the one-shot `get` and `exchange`, the admin API
//! client built on it (`Api`, `ApiReply`), and the wire helpers both this
//! client and the scripted backends read with (head parsing, buffered
//! reads, chunked decoding).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{find, Value, IO_TIMEOUT};

// ---------------------------------------------------------------------------
// Reading HTTP/1.1 off the wire (shared with the backends)
// ---------------------------------------------------------------------------

pub(super) fn parse_head_lines(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    (first, headers)
}

pub(super) fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads from `s` into `buf` until `buf` holds at least `need` bytes.
pub(super) fn fill(s: &mut impl Read, buf: &mut Vec<u8>, need: usize) -> std::io::Result<()> {
    let mut tmp = [0u8; 64 * 1024];
    while buf.len() < need {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "eof"));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Ok(())
}

/// Reads until `buf` contains `needle`; returns the index just after it.
pub(super) fn fill_until(s: &mut impl Read, buf: &mut Vec<u8>, needle: &[u8], from: usize) -> std::io::Result<usize> {
    let mut tmp = [0u8; 64 * 1024];
    loop {
        if buf.len() >= from + needle.len() {
            if let Some(i) = find(&buf[from..], needle) {
                return Ok(from + i + needle.len());
            }
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "eof"));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A decoded chunked body, the raw bytes it used, and its trailers.
pub(super) type Dechunked = (Vec<u8>, usize, Vec<(String, String)>);

/// Decodes a chunked body starting at `buf[0]`, reading more as needed.
/// Returns (decoded, raw length consumed, trailers).
pub(super) fn read_chunked(s: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Dechunked> {
    let bad = |m: &str| std::io::Error::new(ErrorKind::InvalidData, m.to_string());
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let line_end = fill_until(s, buf, b"\r\n", pos)?;
        let line = String::from_utf8_lossy(&buf[pos..line_end - 2]).to_string();
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_txt, 16).map_err(|_| bad("bad chunk size"))?;
        pos = line_end;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let end = fill_until(s, buf, b"\r\n", pos)?;
                let l = String::from_utf8_lossy(&buf[pos..end - 2]).to_string();
                pos = end;
                if l.is_empty() {
                    return Ok((out, pos, trailers));
                }
                if let Some((n, v)) = l.split_once(':') {
                    trailers.push((n.to_string(), v.trim().to_string()));
                }
            }
        }
        fill(s, buf, pos + size + 2)?;
        out.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP client
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The raw head, status line to the final CRLFCRLF.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the response was chunked.
    pub chunked: bool,
    /// The trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        header_of(&self.trailers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One client connection with exact-byte control.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Client { stream, buf: Vec::new() }
    }

    /// Like `connect`, but a failed connect is an `Err` (within `timeout`).
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        Ok(Client { stream, buf: Vec::new() })
    }

    /// Writes exactly `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> &mut Client {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to ringway: {e}"));
        self
    }

    /// Writes `bytes`, ignoring errors (the peer may already have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response to a non-HEAD request.
    pub fn response(&mut self) -> Response {
        self.read_response(false).unwrap_or_else(|e| panic!("reading response: {e}"))
    }

    /// Reads one response to a HEAD request (no body).
    pub fn head_response(&mut self) -> Response {
        self.read_response(true).unwrap_or_else(|e| panic!("reading response: {e}"))
    }

    /// Reads one response; `head_request` means no body follows.
    pub fn read_response(&mut self, head_request: bool) -> std::io::Result<Response> {
        let end = fill_until(&mut self.stream, &mut self.buf, b"\r\n\r\n", 0)?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end);
        let (line, headers) = parse_head_lines(&head[..head.len() - 4]);
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
        let te = header_of(&headers, "transfer-encoding").map(|v| v.to_ascii_lowercase());
        let chunked = te.as_deref().is_some_and(|v| v.contains("chunked"));
        let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let mut trailers = Vec::new();
        let body = if no_body {
            Vec::new()
        } else if chunked {
            let (body, used, t) = read_chunked(&mut self.stream, &mut self.buf)?;
            self.buf.drain(..used);
            trailers = t;
            body
        } else if let Some(n) = header_of(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            fill(&mut self.stream, &mut self.buf, n)?;
            self.buf.drain(..n).collect()
        } else {
            // Until close.
            let mut rest = std::mem::take(&mut self.buf);
            self.stream.read_to_end(&mut rest)?;
            rest
        };
        Ok(Response { status, head, headers, body, chunked, trailers })
    }

    /// Reads exactly `n` raw bytes (e.g. from a tunnel).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        fill(&mut self.stream, &mut self.buf, n).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        self.buf.drain(..n).collect()
    }

    /// Whether the peer closes (read returns 0 or a reset) within `within`,
    /// with no further bytes.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        r
    }

    /// GET `path` with `host`, keep-alive.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response()
    }
}

/// One GET on a fresh connection (`Connection: close`).
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    c.response()
}

/// One raw exchange on a fresh connection.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response()
}

// ---------------------------------------------------------------------------
// Admin API client (JSON over HTTP/1.1, one connection per call)
// ---------------------------------------------------------------------------

/// An admin API answer.
#[derive(Clone, Debug)]
pub struct ApiReply {
    pub status: u16,
    /// The body as JSON (`Null` when empty).
    pub json: Value,
    /// The ETag header, verbatim.
    pub etag: Option<String>,
    pub response: Response,
}

impl ApiReply {
    /// The `error` code of an error body.
    pub fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    /// The `field` of an error body.
    pub fn field(&self) -> Option<&str> {
        self.json["field"].as_str()
    }

    /// Panics with the exchange unless the status is `status`.
    pub fn expect(self, status: u16, what: &str) -> ApiReply {
        assert_eq!(self.status, status, "{what}: {}{}", self.response.head, self.response.text());
        self
    }
}

/// A client for ringway's admin API.
#[derive(Clone, Debug)]
pub struct Api {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr, token: None }
    }

    pub fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    /// One request on a fresh connection. `headers` override the defaults
    /// (`Host: ADDR`, the bearer token); `body` is sent as
    /// `Content-Type: application/json` unless `headers` name another.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> ApiReply {
        self.try_raw(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like `raw`, but a connection that fails or goes unanswered is an
    /// `Err` (for polling a process that may be going away).
    pub fn try_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ApiReply, String> {
        let named = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !named("host") {
            req.push_str(&format!("Host: {}\r\n", self.addr));
        }
        if let (Some(t), false) = (&self.token, named("authorization")) {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !named("content-type") {
                req.push_str("Content-Type: application/json\r\n");
            }
            if !named("content-length") {
                req.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        } else if matches!(method, "POST" | "PUT" | "PATCH") && !named("content-length") {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        let mut c = Client::try_connect(self.addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        c.try_send(&bytes).map_err(|e| format!("sending: {e}"))?;
        let response = c.read_response(method == "HEAD").map_err(|e| format!("reading the answer: {e}"))?;
        let json = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body)
                .map_err(|e| format!("answer is not JSON ({e}):\n{}{}", response.head, response.text()))?
        };
        let etag = response.header("etag").map(str::to_string);
        Ok(ApiReply { status: response.status, json, etag, response })
    }

    /// A JSON request (`body` serialised) with extra headers.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> ApiReply {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.raw(method, path, headers, bytes.as_deref())
    }

    pub fn get(&self, path: &str) -> ApiReply {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> ApiReply {
        self.call("POST", path, &[], Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> ApiReply {
        self.call("PUT", path, &[], Some(body))
    }

    pub fn delete(&self, path: &str) -> ApiReply {
        self.call("DELETE", path, &[], None)
    }

    /// The current routes (GET /api/v1/routes), which must answer 200.
    pub fn routes(&self) -> Vec<Value> {
        let r = self.get("/api/v1/routes").expect(200, "GET /api/v1/routes");
        r.json.as_array().unwrap_or_else(|| panic!("GET /api/v1/routes is not an array: {}", r.json)).clone()
    }

    /// The vHosts of the current routes, in order.
    pub fn vhosts(&self) -> Vec<String> {
        self.routes().iter().map(|r| r["vHost"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// GET /api/v1/config, which must answer 200 with an ETag.
    pub fn config(&self) -> (String, Value) {
        let r = self.get("/api/v1/config").expect(200, "GET /api/v1/config");
        let etag = r.etag.clone().unwrap_or_else(|| panic!("GET /api/v1/config has no ETag:\n{}", r.response.head));
        (etag, r.json)
    }
}
