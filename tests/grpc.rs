//! gRPC end to end through ringway with HTTP/2 on both sides: a real grpcio
//! client (h2c, prior knowledge) → ringway → a real grpcio server
//! (`"protocol": "h2c"`). Unary, server-streaming, client-streaming and
//! bidirectional calls, an error status and trailing metadata intact, a
//! backend that dies mid-call; and an HTTP/1.1 client reaching the same
//! HTTP/2 backend with its trailers; gRPC health checks (scripts/test.sh
//! installs grpcio).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc");

/// The grpcio test server (tests/grpc/server.py); stopped on drop.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        let mut child = Command::new("python3")
            .arg(format!("{DIR}/server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/grpc/server.py (scripts/test.sh installs grpcio)");
        let out = child.stdout.take().expect("stdout");
        // Bounded: the server prints its port at once, or fails and exits.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the gRPC server did not start in 30 s");
        let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("the gRPC server said {line:?} (is grpcio installed?)");
        };
        GrpcServer { child, port }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ringway with h2c on its plain listener, in front of `server` over h2c.
fn ringway_for(server: &GrpcServer) -> Ringway {
    let backend = json!({"id": "grpc", "hostname": "127.0.0.1", "port": server.port, "protocol": "h2c"});
    let mut cfg = config(vec![route("*", "ROUND_ROBIN", vec![backend])]);
    cfg["http2"] = json!({"h2c": true});
    Ringway::start(cfg)
}

/// Runs tests/grpc/client.py against `target`; its JSON answer.
fn client(target: std::net::SocketAddr, extra: &[&str]) -> Value {
    let out = Command::new("timeout")
        .args(["60", "python3", &format!("{DIR}/client.py"), &target.to_string()])
        .args(extra)
        .output()
        .expect("python3 tests/grpc/client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("client.py: {e}\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn every_kind_of_grpc_call_works_through_ringway_with_status_and_trailers_intact() {
    let server = GrpcServer::start();
    let rw = ringway_for(&server);
    let got = client(rw.addr(), &[]);
    assert_eq!(got["unary"], "hello", "{got}");
    assert_eq!(got["unary_trailers"]["x-trailer"], "t1", "trailing metadata: {got}");
    assert_eq!(got["fail"], json!(["INVALID_ARGUMENT", "asked to fail"]), "grpc-status and grpc-message: {got}");
    assert_eq!(got["server_stream"], json!(["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]), "{got}");
    assert_eq!(got["client_stream"], "abc", "{got}");
    assert_eq!(got["bidi"], json!(["X", "Y", "Z"]), "{got}");
    // Counted as HTTP/2 requests.
    let log = rw.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_grpc_backend_that_dies_mid_call_gives_the_client_an_error_not_a_hang() {
    let server = GrpcServer::start();
    let rw = ringway_for(&server);
    let started = std::time::Instant::now();
    let got = client(rw.addr(), &["die"]);
    assert_eq!(got["die"], "UNAVAILABLE", "{got}");
    eprintln!("error seen after {:?}", started.elapsed());
}

#[test]
fn an_http11_client_reaches_an_http2_backend_and_gets_its_trailers() {
    let server = GrpcServer::start();
    let rw = ringway_for(&server);
    // One gRPC message (5-byte prefix: not compressed, length 5) over HTTP/1.1.
    let mut req = b"POST /test.Echo/Unary HTTP/1.1\r\nHost: grpc.test\r\ncontent-type: application/grpc\r\n\
                    te: trailers\r\ncontent-length: 10\r\n\r\n"
        .to_vec();
    req.extend_from_slice(b"\x00\x00\x00\x00\x05hello");
    let mut c = Client::connect(rw.addr());
    c.send(&req);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.chunked, "a body without a length comes chunked (trailers follow it): {}", r.head);
    assert_eq!(r.body, b"\x00\x00\x00\x00\x05hello", "{}", r.head);
    assert_eq!(r.trailer("grpc-status"), Some("0"), "trailers: {:?}", r.trailers);
    assert_eq!(r.trailer("x-trailer"), Some("t1"), "trailers: {:?}", r.trailers);
}

/// The health state the stats API reports for the catch-all route's
/// backend, polled until it is `want` (bounded); the last one seen.
fn state_becomes(rw: &Ringway, want: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let s = rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
        let state = s["backends"][0]["state"].as_str().unwrap_or("").to_string();
        if state == want || std::time::Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn grpc_health_checks_follow_the_servers_serving_status() {
    let server = GrpcServer::start();
    let backend = json!({"id": "grpc", "hostname": "127.0.0.1", "port": server.port, "protocol": "h2c"});
    let mut r = route("*", "ROUND_ROBIN", vec![backend]);
    r["health"] =
        json!({"grpc": true, "intervalMs": 200, "downIntervalMs": 200, "rise": 1, "fall": 1, "timeoutMs": 1000});
    let mut cfg = with_admin(config(vec![r]), None);
    cfg["http2"] = json!({"h2c": true});
    let rw = Ringway::start(cfg);
    assert_eq!(state_becomes(&rw, "up", Duration::from_secs(5)), "up");
    // NOT_SERVING (set through ringway itself): taken out.
    assert_eq!(client(rw.addr(), &["health=0"])["health"], "0");
    assert_eq!(state_becomes(&rw, "down", Duration::from_secs(5)), "down", "NOT_SERVING must take it out");
    // SERVING again (straight to the server: ringway answers 503 now).
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    assert_eq!(client(direct, &["health=1"])["health"], "1");
    assert_eq!(state_becomes(&rw, "up", Duration::from_secs(5)), "up", "SERVING must bring it back");
}

/// Established TCP connections to 127.0.0.1:`port` (from /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && f[2].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

#[test]
fn calls_beyond_a_backends_stream_limit_open_more_connections_up_to_eight() {
    let server = GrpcServer::start();
    let rw = ringway_for(&server);
    // 12 slow calls at once; the server takes 2 streams per connection.
    let mut child = Command::new("timeout")
        .args(["60", "python3", &format!("{DIR}/client.py"), &rw.addr().to_string(), "parallel=12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client.py");
    let mut most = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        most = most.max(connections_to(server.port));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("client output");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("client JSON: {e}\nstderr: {}\nringway: {}", String::from_utf8_lossy(&out.stderr), rw.log())
    });
    assert_eq!(got["parallel"].as_array().map(|a| a.len()), Some(12), "{got}");
    assert!(got["parallel"].as_array().is_some_and(|a| a.iter().all(|v| v == "sleep")), "{got}");
    eprintln!("most connections to the backend at once: {most}");
    assert!((2..=8).contains(&most), "connections to the backend: {most} (streams limit 2, 12 calls, cap 8)");
}
