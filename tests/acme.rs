//! Automatic certificates end to end against a real ACME server on
//! loopback: Debian's `pebble` (Let's Encrypt's test CA; scripts/test.sh
//! installs it) with `pebble-challtestsrv` as its DNS, both started here on
//! free ports and stopped on drop. Pebble's HTTP-01 checks connect to
//! ringway's plain listener, which answers them itself.
//!
//! A route added over the API with `autoHttps` serves a pebble-issued
//! certificate (verified against pebble's root) within seconds; HTTP gets
//! 308 to https; the certificate and the ACME account are stored 0600 and
//! a restart serves the same certificate without a new order; a name whose
//! validation cannot succeed is reported as failed, with the CA's reason,
//! in the certificates list and /metrics, and retried later.

mod support;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits (bounded) until something accepts on `port`.
fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} is not listening on {port} after 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pebble and its DNS on free loopback ports, validating HTTP-01 against
/// `http_port`; every name resolves to 127.0.0.1 unless told otherwise.
struct Pebble {
    _dns: Proc,
    _ca: Proc,
    dir: TempDir,
    directory: String,
    management: u16,
    dns_management: u16,
    /// The CA that signed pebble's own HTTPS certificate (trusted via caFile).
    https_ca: TestCa,
}

impl Pebble {
    fn start(http_port: u16) -> Pebble {
        let dir = TempDir::new("pebble");
        let (dns, dns_management, listen, management) = (free_port(), free_port(), free_port(), free_port());
        let mut challtest = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (scripts/test.sh installs pebble)");
        wait_listening(dns_management, "pebble-challtestsrv", &mut challtest);
        let https_ca = TestCa::new();
        let leaf = https_ca.issue(&["127.0.0.1", "localhost"]);
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": leaf.cert_path, "privateKey": leaf.key_path,
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let mut ca = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random sleeps before validating; no random nonce rejections.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (scripts/test.sh installs it)");
        wait_listening(listen, "pebble", &mut ca);
        Pebble {
            _dns: Proc(challtest),
            _ca: Proc(ca),
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            dns_management,
            https_ca,
            dir,
        }
    }

    /// The root pebble issues under (changes every run), as a PEM file.
    fn root_path(&self) -> std::path::PathBuf {
        let out = Command::new("curl")
            .args(["-q", "-sS", "--max-time", "10", "--cacert"])
            .arg(self.https_ca.ca_path())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .expect("curl");
        let pem = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(pem.contains("BEGIN CERTIFICATE"), "pebble's root: {pem}");
        let path = self.dir.join("root.pem");
        std::fs::write(&path, pem).expect("root");
        path
    }

    /// Makes `host` resolve to `ip` (for a validation that must fail).
    fn resolve(&self, host: &str, ip: &str) {
        let body = json!({"host": host, "addresses": [ip]}).to_string();
        let out = Command::new("curl")
            .args(["-q", "-sS", "--max-time", "10", "-d", &body])
            .arg(format!("http://127.0.0.1:{}/add-a", self.dns_management))
            .output()
            .expect("curl");
        assert!(out.status.success(), "challtestsrv add-a: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn acme_config(http_port: u16, pebble: &Pebble, state_file: &std::path::Path) -> Value {
    json!({
        "listen": [format!("127.0.0.1:{http_port}")],
        "tls": {"listen": ["127.0.0.1:0"]},
        "admin": {"listen": "127.0.0.1:0"},
        "health": {"intervalMs": 0},
        "stateFile": state_file,
        "acme": {"directory": pebble.directory, "email": "ops@example.com", "caFile": pebble.https_ca.ca_path()},
        "routes": [],
    })
}

/// The certificates list's entry for `domain` once `done` holds (bounded).
fn wait_certificate(api: &Api, domain: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = api.get("/api/v1/certificates").expect(200, "GET /api/v1/certificates").json;
        let entry = list.as_array().into_iter().flatten().find(|c| c["domain"] == json!(domain)).cloned();
        if let Some(e) = entry.as_ref().filter(|e| done(e)) {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "{domain}: no {what} after 60 s; last entry: {entry:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_auto_https_route_gets_a_certificate_from_a_real_acme_server() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port);
    let backend = Backend::respond(200, "secure hello").named("app").start();
    let dir = TempDir::new("acme");
    let state_file = dir.join("state.json");
    let config_path = dir.join("ringway.json");
    std::fs::write(&config_path, acme_config(http_port, &pebble, &state_file).to_string()).expect("config");
    let mut rw = Ringway::start_at(&config_path, 2, &[]);
    let api = rw.api();
    let started = Instant::now();
    let route = json!({"vHost": "secure.test", "autoHttps": true, "backends": [backend.config()]});
    api.post("/api/v1/routes", &route).expect(201, "POST an autoHttps route with no certificate");

    let entry = wait_certificate(&api, "secure.test", "issued certificate", |e| e["notAfter"].is_i64());
    let took = started.elapsed();
    assert_eq!(entry["source"], json!("acme"), "{entry}");
    assert_eq!(entry["acme"]["state"], json!("valid"), "{entry}");
    assert!(entry["issuer"].as_str().is_some_and(|i| i.contains("Pebble")), "{entry}");
    println!("secure.test: certificate issued and served {} ms after the route was added", took.as_millis());

    // HTTPS verifies against pebble's root; the backend answers.
    let root = pebble.root_path();
    let tls_port = rw.tls_addr().expect("a TLS listener").port();
    let r = curl_https(tls_port, "secure.test", "/", &root);
    assert_eq!((r.status, r.text()), (200, "secure hello".to_string()), "HTTPS with pebble's certificate");
    // Plain HTTP is redirected.
    let plain = get(rw.addr(), "secure.test", "/page?q=1");
    assert_eq!(plain.status, 308, "{}", plain.head);
    assert_eq!(plain.header("location"), Some(format!("https://secure.test:{tls_port}/page?q=1").as_str()));
    // Reported in /metrics.
    let metrics = get(rw.admin_addr(), &rw.admin_addr().to_string(), "/metrics").text();
    assert!(metrics.contains(r#"ringway_acme_certificate{domain="secure.test",state="valid"} 1"#), "{metrics}");
    // Stored 0600 with its key, as is the ACME account.
    let state = std::fs::read_to_string(&state_file).unwrap_or_default()
        + &std::fs::read_to_string(format!("{}.log", state_file.display())).unwrap_or_default();
    assert!(state.contains("\"acme\":true") && state.contains("PRIVATE KEY"), "the state keeps the certificate");
    for f in [state_file.clone(), dir.join("state.json.acme-account.json")] {
        let mode = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }
    let served = s_client(tls_port, Some("secure.test"), &[], b"").leaf().expect("a leaf over TLS");

    // A restart serves the same certificate at once, with no new order.
    rw.stop();
    let rw = Ringway::start_at(&config_path, 2, &[]);
    let again = s_client(rw.tls_addr().expect("TLS").port(), Some("secure.test"), &[], b"").leaf().expect("leaf");
    assert_eq!(again.serial, served.serial, "the stored certificate, not a new one");
    let entry = wait_certificate(&rw.api(), "secure.test", "valid state", |e| e["acme"]["state"] == json!("valid"));
    assert_eq!(entry["acme"]["issued"], json!(0), "nothing issued after the restart: {entry}");
}

#[test]
fn a_failed_validation_is_reported_and_retried_later() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port);
    // Pebble looks for broken.test where nothing listens.
    pebble.resolve("broken.test", "127.0.0.2");
    let dir = TempDir::new("acme-fail");
    let cfg = acme_config(http_port, &pebble, &dir.join("state.json"));
    let path = dir.join("ringway.json");
    std::fs::write(&path, cfg.to_string()).expect("config");
    let rw = Ringway::start_at(&path, 1, &[]);
    let api = rw.api();
    let b = Backend::respond(200, "x").named("x").start();
    let route = json!({"vHost": "broken.test", "autoHttps": true, "backends": [b.config()]});
    api.post("/api/v1/routes", &route).expect(201, "POST");
    // HTTP-01 cannot prove a wildcard: such a route still needs a certificate.
    let wild = json!({"vHost": "*.wild.test", "autoHttps": true, "backends": [b.config()]});
    let r = api.post("/api/v1/routes", &wild);
    assert_eq!((r.status, r.json["field"].as_str()), (400, Some("autoHttps")), "{}", r.json);
    let entry = wait_certificate(&api, "broken.test", "failure", |e| e["acme"]["state"] == json!("failed"));
    assert_eq!(entry["notAfter"], Value::Null, "{entry}");
    assert!(entry["acme"]["lastError"].as_str().is_some_and(|e| !e.is_empty()), "the CA's reason: {entry}");
    assert!(entry["acme"]["failures"].as_u64() >= Some(1), "{entry}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let next = entry["acme"]["nextAttemptAt"].as_i64().expect("a next attempt");
    assert!(next > now && next <= now + 11, "retried after about 10 s, not at once: {entry}");
    let metrics = get(rw.admin_addr(), &rw.admin_addr().to_string(), "/metrics").text();
    assert!(metrics.contains(r#"ringway_acme_certificate{domain="broken.test",state="failed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ringway_acme_failures{domain="broken.test"} 1"#), "{metrics}");
    // Plain HTTP still answers (a redirect), and the API stays responsive.
    assert_eq!(get(rw.addr(), "broken.test", "/").status, 308);
}
