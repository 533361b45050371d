//! `ringway demo`: three tiny backends on loopback and a config that puts
//! ringway in front of them, so a fresh machine can see balancing at work
//! with nothing else installed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// Starts one demo backend on an ephemeral loopback port; it answers every
/// request with its name (keep-alive, thread per connection).
pub fn start_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name(format!("demo-{name}")).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = std::thread::Builder::new().spawn(move || serve_demo(stream, name));
        }
    })?;
    Ok(addr)
}

fn serve_demo(stream: TcpStream, name: &str) {
    let Ok(write_half) = stream.try_clone() else { return };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let mut content_length = 0usize;
        let mut close = false;
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if first {
                close = lower.ends_with("http/1.0\r\n");
                first = false;
            } else if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; content_length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let text = format!("hello from {name}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-backend: {name}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Starts the three backends and builds the demo config.
pub fn config(listen: &str, admin: &str) -> Result<control::model::Config, String> {
    let mut backends = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let addr = start_backend(name).map_err(|e| format!("demo backend: {e}"))?;
        backends.push(format!(r#"{{"id":"{name}","hostname":"127.0.0.1","port":{}}}"#, addr.port()));
    }
    let text = format!(
        r#"{{"listen":["{listen}"],"admin":{{"listen":"{admin}"}},"health":{{"intervalMs":2000}},
            "routes":[{{"id":"demo","vHost":"*","strategy":"ROUND_ROBIN","backends":[{}]}}]}}"#,
        backends.join(",")
    );
    let config = control::model::parse_config(&text).map_err(|e| e.to_string())?;
    let host = listen.to_string();
    println!("ringway demo: three backends (alpha, beta, gamma) behind http://{host}/");
    println!("try:  for i in 1 2 3 4 5 6; do curl -s http://{host}/; done");
    println!("dashboard:  http://{admin}/");
    println!("ctl:  ringway ctl --admin {admin} stats");
    Ok(config)
}
