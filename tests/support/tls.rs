//! TLS fixtures, with no Rust TLS crate: a throwaway CA and the leaf
//! certificates it signs, made with the `openssl` command line (`TestCa`,
//! `Issued`); HTTPS requests through `curl` (`curl_https`); raw handshakes
//! through `openssl s_client` (`s_client`); and `cert_info`, which reads a
//! PEM certificate's serial, subject, validity and SANs. scripts/test.sh
//! installs both tools. Every subprocess is killed after `TOOL_TIMEOUT`.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ringway::TempDir;

/// How long any one `openssl` or `curl` run may take before it is killed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------

/// What a finished (or killed) subprocess left.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The exit code; `None` when it was killed (or died of a signal).
    pub exit_code: Option<i32>,
    /// Whether it was killed for running past the timeout.
    pub timed_out: bool,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).to_string()
    }
}

/// Runs `cmd` with `stdin` written to it (then closed), collecting its
/// output; kills it after `timeout`. Panics only when it cannot be spawned.
pub fn run_tool(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> ToolOutput {
    let program = cmd.get_program().to_string_lossy().to_string();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program} ({e}); scripts/test.sh installs curl and openssl"));
    let mut input = child.stdin.take().unwrap();
    let input_bytes = stdin.to_vec();
    // The peer may exit without reading its stdin: write errors are fine.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&input_bytes);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            out
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let _ = writer.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).to_string();
    let exit_code = if timed_out { None } else { status.and_then(|s| s.code()) };
    ToolOutput { stdout, stderr, exit_code, timed_out }
}

/// Runs `openssl ARGS` (with `stdin`), which must succeed; its stdout.
fn openssl(args: &[&str], stdin: &[u8]) -> String {
    let out = run_tool(Command::new("openssl").args(args), stdin, TOOL_TIMEOUT);
    assert!(out.success(), "openssl {} failed ({:?}):\n{}", args.join(" "), out.exit_code, out.stderr);
    out.stdout_text()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {p:?}"))
}

/// A fresh PKCS#8 PEM P-256 key at `path` (`BEGIN PRIVATE KEY`).
fn new_p256_key(path: &Path) {
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-pkeyopt",
            "ec_param_enc:named_curve",
            "-out",
            path_str(path),
        ],
        b"",
    );
}

/// `t` as an ASN.1 GeneralizedTime string, `YYYYMMDDHHMMSSZ` (UTC), the
/// form `openssl ca -startdate/-enddate` takes.
fn asn1_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("a time after 1970").as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---------------------------------------------------------------------------
// A test CA
// ---------------------------------------------------------------------------

/// A throwaway ECDSA P-256 certificate authority in a `TempDir` (removed,
/// with every certificate it issued, on drop). Safe to share between
/// threads: issuing is serialised.
pub struct TestCa {
    dir: TempDir,
    ca_path: PathBuf,
    ca_key_path: PathBuf,
    ca_pem: String,
    config_path: PathBuf,
    /// Serialises `openssl ca` (it rewrites its database) and numbers leaves.
    issued: Mutex<usize>,
}

/// A leaf certificate from `TestCa::issue`. The files live in the CA's
/// directory: they are gone once the `TestCa` is dropped.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf alone, PEM.
    pub cert_path: PathBuf,
    /// Its key: PKCS#8 PEM (`BEGIN PRIVATE KEY`), P-256.
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    /// The issuing CA's certificate, PEM (not part of `cert_pem`).
    pub ca_pem: String,
    /// The serial as `openssl x509 -serial` prints it (upper-case hex).
    pub serial: String,
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

impl TestCa {
    /// A new CA, `CN=ringway test CA`, valid from now for ten years.
    pub fn new() -> TestCa {
        let dir = TempDir::new("ca");
        let ca_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca.key");
        let config_path = dir.join("ca.cnf");
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        // One config for `req` (the CA itself and the leaves' CSRs) and `ca`
        // (signing), so the system openssl.cnf plays no part.
        let config = format!(
            "[req]\n\
             distinguished_name = dn\n\
             prompt = no\n\
             x509_extensions = v3_ca\n\
             [dn]\n\
             CN = ringway test CA\n\
             [v3_ca]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [ca]\n\
             default_ca = test_ca\n\
             [test_ca]\n\
             database = {db}\n\
             new_certs_dir = {newcerts}\n\
             certificate = {cert}\n\
             private_key = {key}\n\
             rand_serial = yes\n\
             default_md = sha256\n\
             policy = policy_any\n\
             unique_subject = no\n\
             copy_extensions = none\n\
             email_in_dn = no\n\
             [policy_any]\n\
             commonName = supplied\n",
            db = path_str(&dir.join("index.txt")),
            newcerts = path_str(&dir.join("newcerts")),
            cert = path_str(&ca_path),
            key = path_str(&ca_key_path),
        );
        std::fs::write(&config_path, config).unwrap();
        new_p256_key(&ca_key_path);
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-config",
                path_str(&config_path),
                "-key",
                path_str(&ca_key_path),
                "-days",
                "3650",
                "-out",
                path_str(&ca_path),
            ],
            b"",
        );
        let ca_pem = std::fs::read_to_string(&ca_path).unwrap();
        TestCa { dir, ca_path, ca_key_path, ca_pem, config_path, issued: Mutex::new(0) }
    }

    /// The CA certificate's file (for `--cacert`, `-CAfile`).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's directory (a test may put its own files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf for `names` (DNS names such as `example.test` or
    /// `*.wild.test`, or IP addresses), valid from a minute ago for 30 days.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with_validity(names, 0, 30)
    }

    /// A leaf for `names` valid from `not_before_offset_days` days from now
    /// (negative: in the past; less a minute, so that 0 is valid at once)
    /// until `days` days after that. `(-10, 5)` expired five days ago;
    /// `(1, 30)` is not valid yet.
    pub fn issue_with_validity(&self, names: &[&str], not_before_offset_days: i64, days: u32) -> Issued {
        let day = 86_400i64;
        let now = SystemTime::now();
        let at = |secs: i64| {
            if secs >= 0 {
                now + Duration::from_secs(secs as u64)
            } else {
                now - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let not_before = at(not_before_offset_days * day - 60);
        let not_after = at((not_before_offset_days + i64::from(days)) * day);
        self.issue_between(names, not_before, not_after)
    }

    /// A leaf for `names` (the first is also its CN) valid from
    /// `not_before` to `not_after`: ECDSA P-256, serverAuth, signed by
    /// this CA with SHA-256.
    pub fn issue_between(&self, names: &[&str], not_before: SystemTime, not_after: SystemTime) -> Issued {
        assert!(!names.is_empty(), "a certificate needs at least one name");
        let sans: Vec<String> = names
            .iter()
            .map(|n| {
                assert!(
                    !n.is_empty() && !n.contains([',', ' ', '/', '\n']),
                    "name {n:?} cannot go into a subjectAltName as is"
                );
                match n.parse::<IpAddr>() {
                    Ok(_) => format!("IP:{n}"),
                    Err(_) => format!("DNS:{n}"),
                }
            })
            .collect();
        let mut count = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        *count += 1;
        let leaf = self.dir.join(&format!("leaf-{}", *count));
        std::fs::create_dir_all(&leaf).unwrap();
        let key_path = leaf.join("key.pem");
        let cert_path = leaf.join("cert.pem");
        let csr_path = leaf.join("csr.pem");
        let ext_path = leaf.join("ext.cnf");
        std::fs::write(
            &ext_path,
            format!(
                "[leaf]\n\
                 basicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\n\
                 subjectAltName = {}\n\
                 subjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n",
                sans.join(",")
            ),
        )
        .unwrap();
        new_p256_key(&key_path);
        let subject = format!("/CN={}", names[0]);
        let config = path_str(&self.config_path);
        openssl(
            &[
                "req",
                "-new",
                "-config",
                config,
                "-key",
                path_str(&key_path),
                "-subj",
                &subject,
                "-out",
                path_str(&csr_path),
            ],
            b"",
        );
        openssl(
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                config,
                "-cert",
                path_str(&self.ca_path),
                "-keyfile",
                path_str(&self.ca_key_path),
                "-in",
                path_str(&csr_path),
                "-out",
                path_str(&cert_path),
                "-startdate",
                &asn1_time(not_before),
                "-enddate",
                &asn1_time(not_after),
                "-extfile",
                path_str(&ext_path),
                "-extensions",
                "leaf",
            ],
            b"",
        );
        drop(count);
        let cert_pem = std::fs::read_to_string(&cert_path).unwrap();
        let key_pem = std::fs::read_to_string(&key_path).unwrap();
        let serial = cert_info(&cert_pem).serial;
        Issued { cert_path, key_path, cert_pem, key_pem, ca_pem: self.ca_pem.clone(), serial }
    }
}

// ---------------------------------------------------------------------------
// Reading certificates
// ---------------------------------------------------------------------------

/// What `openssl x509` says about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// RFC 2253, e.g. `CN=example.test`.
    pub subject: String,
    pub issuer: String,
    /// As openssl prints them, e.g. `Jan  1 00:00:00 2025 GMT`.
    pub not_before: String,
    pub not_after: String,
    /// The subjectAltName entries without their `DNS:` / `IP Address:`
    /// prefix, in order.
    pub sans: Vec<String>,
}

/// Reads the first certificate in `pem`.
pub fn cert_info(pem: &str) -> CertInfo {
    let out = openssl(
        &[
            "x509",
            "-noout",
            "-serial",
            "-subject",
            "-issuer",
            "-dates",
            "-nameopt",
            "RFC2253",
            "-ext",
            "subjectAltName",
        ],
        pem.as_bytes(),
    );
    let mut info = CertInfo {
        serial: String::new(),
        subject: String::new(),
        issuer: String::new(),
        not_before: String::new(),
        not_after: String::new(),
        sans: Vec::new(),
    };
    let mut in_san = false;
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("serial=") {
            info.serial = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("subject=") {
            info.subject = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("issuer=") {
            info.issuer = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("notBefore=") {
            info.not_before = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("notAfter=") {
            info.not_after = v.trim().to_string();
        } else if line.contains("Subject Alternative Name") {
            in_san = true;
        } else if in_san && line.starts_with(char::is_whitespace) {
            for entry in line.trim().split(", ") {
                let name = entry.strip_prefix("DNS:").or_else(|| entry.strip_prefix("IP Address:")).unwrap_or(entry);
                info.sans.push(name.to_string());
            }
        } else {
            in_san = false;
        }
    }
    info
}

/// Every PEM certificate block in `text`, in order.
pub fn pem_certs(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        let end = b + e + END.len();
        out.push(format!("{}\n", &rest[b..end]));
        rest = &rest[end..];
    }
    out
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// What `curl` got.
#[derive(Clone, Debug)]
pub struct CurlResult {
    /// The final response's status; 0 when there was none.
    pub status: u16,
    /// The final response's headers, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From the final status line: `1.0`, `1.1`, `2`, …; empty when there
    /// was no response.
    pub http_version: String,
    /// curl's exit code: 0 ok, 7 connect failed, 28 timed out, 35 handshake
    /// failed, 60 certificate not trusted / name mismatch; -1 when killed.
    pub exit_code: i32,
    pub stderr: String,
}

impl CurlResult {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// `GET https://HOST:PORT/PATH` over HTTP/1.1, with HOST resolved to
/// 127.0.0.1 (so it is both the SNI and the Host header) and only `ca_path`
/// trusted; 10 s at most.
pub fn curl_https(port: u16, host: &str, path: &str, ca_path: &Path) -> CurlResult {
    curl_https_with(port, host, path, ca_path, &[])
}

/// `curl_https` with extra curl arguments after the defaults (so e.g.
/// `--http2`, `-X POST`, `-H 'x: y'`, `--tlsv1.3`, `-k` override them).
pub fn curl_https_with(port: u16, host: &str, path: &str, ca_path: &Path, extra: &[&str]) -> CurlResult {
    let dir = TempDir::new("curl");
    let (head_path, body_path) = (dir.join("head"), dir.join("body"));
    let slash = if path.starts_with('/') { "" } else { "/" };
    let url = format!("https://{host}:{port}{slash}{path}");
    let resolve = format!("{host}:{port}:127.0.0.1");
    let mut cmd = Command::new("curl");
    // -q first: no ~/.curlrc.
    cmd.args(["-q", "-sS", "--noproxy", "*", "--http1.1", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(ca_path)
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(extra)
        .arg(&url);
    let out = run_tool(&mut cmd, b"", TOOL_TIMEOUT + Duration::from_secs(5));
    let written = out.stdout_text();
    let mut w = written.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    // -D writes every head (1xx included): keep the last.
    let heads = std::fs::read(&head_path).unwrap_or_default();
    let heads = String::from_utf8_lossy(&heads);
    let last = heads.trim_end().rsplit("\r\n\r\n").next().unwrap_or("");
    // From the status line (`%{http_version}` says `1` for HTTP/1.0).
    let http_version = match last.split(' ').next().and_then(|v| v.strip_prefix("HTTP/")) {
        Some(v) => v.to_string(),
        None => w.next().filter(|v| *v != "0").unwrap_or("").to_string(),
    };
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body_path).unwrap_or_default();
    CurlResult { status, headers, body, http_version, exit_code: out.exit_code.unwrap_or(-1), stderr: out.stderr }
}

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

/// What `openssl s_client` printed, and what that says.
#[derive(Clone, Debug)]
pub struct SClient {
    pub stdout: String,
    pub stderr: String,
    /// Its exit code; `None` when it was killed after `TOOL_TIMEOUT`.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The negotiated version (`TLSv1.3`, `TLSv1.2`); `None` when no
    /// handshake completed.
    pub protocol: Option<String>,
    /// The negotiated cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// The negotiated ALPN protocol, e.g. `h2`.
    pub alpn: Option<String>,
    /// `Verify return code: N` (0 is ok; meaningful with `-CAfile`).
    pub verify_code: Option<i32>,
    /// The certificates the server presented, leaf first, PEM.
    pub peer_certs: Vec<String>,
}

impl SClient {
    /// Whether a handshake completed.
    pub fn handshake_ok(&self) -> bool {
        self.protocol.is_some()
    }

    /// The presented leaf certificate, PEM.
    pub fn leaf_pem(&self) -> Option<&str> {
        self.peer_certs.first().map(String::as_str)
    }

    /// Serial, subject, validity and SANs of the presented leaf.
    pub fn leaf(&self) -> Option<CertInfo> {
        self.leaf_pem().map(cert_info)
    }
}

/// `openssl s_client -connect 127.0.0.1:PORT -showcerts` with SNI
/// `servername` (`None`: no SNI at all), then `extra_args` (e.g.
/// `-alpn h2`, `-tls1_2`, `-CAfile PATH`, `-ign_eof`). `stdin` is sent
/// after the handshake and then closed, which ends the session unless
/// `-ign_eof` is given (then it lasts until the server closes). Killed
/// after `TOOL_TIMEOUT`.
pub fn s_client(port: u16, servername: Option<&str>, extra_args: &[&str], stdin: &[u8]) -> SClient {
    let connect = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &connect, "-showcerts"]);
    match servername {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra_args);
    let out = run_tool(&mut cmd, stdin, TOOL_TIMEOUT);
    let stdout = out.stdout_text();
    let none_is_none = |v: &str| (!v.is_empty() && v != "(NONE)").then(|| v.to_string());
    let mut protocol = None;
    let mut cipher = None;
    let mut alpn = None;
    let mut verify_code = None;
    for line in stdout.lines() {
        // `New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384` (`(NONE)` on failure).
        if let Some(rest) = line.strip_prefix("New, ").or_else(|| line.strip_prefix("Reused, ")) {
            if let Some((p, c)) = rest.split_once(", Cipher is ") {
                protocol = none_is_none(p.trim());
                cipher = none_is_none(c.trim());
            }
        } else if let Some(v) = line.strip_prefix("ALPN protocol: ") {
            alpn = Some(v.trim().to_string());
        } else if let Some(v) = line.trim().strip_prefix("Verify return code: ") {
            verify_code = v.split(' ').next().and_then(|n| n.parse().ok());
        }
    }
    let peer_certs = pem_certs(&stdout);
    SClient {
        stderr: out.stderr,
        exit_code: out.exit_code,
        timed_out: out.timed_out,
        protocol,
        cipher,
        alpn,
        verify_code,
        peer_certs,
        stdout,
    }
}
