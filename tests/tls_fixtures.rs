//! Checks of the TLS fixtures in support/tls.rs (and of the `listening`
//! line parser), without ringway: the test CA issues certificates that
//! `openssl verify` accepts, or rejects as expired / not yet valid; and
//! `curl_https` / `s_client` read what `openssl s_server` answers.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use support::*;

fn verify(ca: &TestCa, cert: &std::path::Path) -> ToolOutput {
    run_tool(Command::new("openssl").arg("verify").arg("-CAfile").arg(ca.ca_path()).arg(cert), b"", TOOL_TIMEOUT)
}

/// The public key of a key or certificate file, PEM.
fn public_key(args: &[&str], path: &std::path::Path) -> String {
    let out = run_tool(Command::new("openssl").args(args).arg(path), b"", TOOL_TIMEOUT);
    assert!(out.success(), "openssl {args:?}: {}", out.stderr);
    out.stdout_text()
}

#[test]
fn ca_issues_a_leaf_that_openssl_verifies() {
    let ca = TestCa::new();
    assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"), "{}", ca.ca_pem());
    let leaf = ca.issue(&["example.test", "*.wild.test"]);

    let v = verify(&ca, &leaf.cert_path);
    assert!(v.success() && v.stdout_text().contains(": OK"), "openssl verify: {}{}", v.stdout_text(), v.stderr);

    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "not PKCS#8: {}", leaf.key_pem);
    assert_eq!(pem_certs(&leaf.cert_pem).len(), 1, "cert_pem is the leaf alone");
    assert_eq!(leaf.ca_pem, ca.ca_pem());
    assert_eq!(std::fs::read_to_string(&leaf.cert_path).unwrap(), leaf.cert_pem);
    assert_eq!(std::fs::read_to_string(&leaf.key_path).unwrap(), leaf.key_pem);
    assert_eq!(
        public_key(&["pkey", "-pubout", "-in"], &leaf.key_path),
        public_key(&["x509", "-noout", "-pubkey", "-in"], &leaf.cert_path),
        "key and certificate do not match"
    );

    let info = cert_info(&leaf.cert_pem);
    assert_eq!(info.sans, ["example.test", "*.wild.test"]);
    assert_eq!(info.subject, "CN=example.test");
    assert_eq!(info.issuer, "CN=ringway test CA");
    assert_eq!(info.serial, leaf.serial);
    assert!(!info.serial.is_empty());

    let ext = run_tool(
        Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&leaf.cert_path),
        b"",
        TOOL_TIMEOUT,
    )
    .stdout_text();
    assert!(ext.contains("TLS Web Server Authentication"), "no serverAuth EKU:\n{ext}");
    assert!(ext.contains("prime256v1") || ext.contains("P-256"), "not P-256:\n{ext}");
    assert!(ext.contains("CA:FALSE"), "{ext}");

    // Each leaf gets its own serial; IP addresses become IP SANs.
    let other = ca.issue(&["127.0.0.1", "localhost"]);
    assert_ne!(other.serial, leaf.serial);
    assert_eq!(cert_info(&other.cert_pem).sans, ["127.0.0.1", "localhost"]);
}

#[test]
fn expired_and_not_yet_valid_leaves_fail_verification() {
    let ca = TestCa::new();
    let expired = ca.issue_with_validity(&["old.test"], -10, 5);
    let v = verify(&ca, &expired.cert_path);
    assert!(!v.success(), "an expired leaf verified: {}", v.stdout_text());
    assert!(format!("{}{}", v.stdout_text(), v.stderr).contains("expired"), "{}{}", v.stdout_text(), v.stderr);

    let future = ca.issue_with_validity(&["new.test"], 1, 30);
    let v = verify(&ca, &future.cert_path);
    assert!(!v.success(), "a not-yet-valid leaf verified: {}", v.stdout_text());
    assert!(format!("{}{}", v.stdout_text(), v.stderr).contains("not yet valid"), "{}{}", v.stdout_text(), v.stderr);
}

#[test]
fn listening_line_with_and_without_tls() {
    let old = parse_listening("listening proxy=127.0.0.1:1,127.0.0.1:2 admin=-").unwrap();
    assert_eq!(old.proxy, ["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()]);
    assert_eq!(old.admin, None);
    assert!(old.tls.is_empty());

    let new = parse_listening("listening proxy=127.0.0.1:1 admin=127.0.0.1:3 tls=127.0.0.1:4,127.0.0.1:5").unwrap();
    assert_eq!(new.admin, Some("127.0.0.1:3".parse().unwrap()));
    assert_eq!(new.tls, ["127.0.0.1:4".parse().unwrap(), "127.0.0.1:5".parse().unwrap()]);

    let none = parse_listening("listening proxy=127.0.0.1:1 admin=- tls=-").unwrap();
    assert!(none.tls.is_empty());
    assert!(parse_listening("something else").is_none());
}

/// `openssl s_server -www` on a free loopback port; killed on drop.
struct SServer(Child, u16);

impl SServer {
    fn start(leaf: &Issued) -> SServer {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-alpn", "http/1.1", "-cert"])
            .arg(&leaf.cert_path)
            .arg("-key")
            .arg(&leaf.key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // `ACCEPT 127.0.0.1:PORT`
        let port = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("ACCEPT ") {
                        break a.rsplit(':').next().unwrap().parse().unwrap();
                    }
                }
                _ => panic!("openssl s_server printed no ACCEPT line"),
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        SServer(child, port)
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn curl_and_s_client_read_an_openssl_server() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["example.test", "*.wild.test"]);
    let server = SServer::start(&leaf);

    let r = curl_https(server.1, "a.wild.test", "/", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (0, 200), "curl: {}", r.stderr);
    assert_eq!(r.http_version, "1.0", "s_server -www answers HTTP/1.0");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("text/html")), "{:?}", r.headers);
    assert!(r.text().contains("Ciphers"), "{}", r.text());

    // A name the certificate does not cover.
    let r = curl_https(server.1, "other.test", "/", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (60, 0), "curl: {}", r.stderr);

    let ca_path = ca.ca_path().to_str().unwrap();
    let s = s_client(server.1, Some("example.test"), &["-CAfile", ca_path, "-alpn", "http/1.1"], b"");
    assert!(s.handshake_ok(), "no handshake: {}\n{}", s.stdout, s.stderr);
    assert_eq!(s.exit_code, Some(0));
    assert_eq!(s.verify_code, Some(0));
    assert_eq!(s.alpn.as_deref(), Some("http/1.1"));
    assert!(s.protocol.as_deref().is_some_and(|p| p.starts_with("TLSv1.")), "{:?}", s.protocol);
    assert!(s.cipher.is_some());
    assert_eq!(s.peer_certs.len(), 1, "s_server sends the leaf alone");
    let presented = s.leaf().unwrap();
    assert_eq!(presented.serial, leaf.serial);
    assert_eq!(presented.sans, ["example.test", "*.wild.test"]);

    let s = s_client(server.1, None, &["-tls1_2"], b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(s.protocol.as_deref(), Some("TLSv1.2"), "{}\n{}", s.stdout, s.stderr);
}
