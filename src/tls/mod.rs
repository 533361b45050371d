//! TLS: which certificate a handshake gets, the rustls configs, and the
//! accept path of a TLS listener.
//!
//! The controller builds one `TlsState` (certificates parsed once, the
//! SNI index, upstream client configs) whenever the certificate set
//! changes, and hands it to every worker inside the snapshot. Each worker
//! wraps it in its own rustls `ServerConfig` with its own bounded session
//! cache; ticket keys come from one rotating ticketer shared by every
//! worker, so a ticket issued on one core resumes on another.
//!
//! Certificate precedence for a name: a certificate stored through the API
//! beats a route's `ssl`, which beats one from the config file (as the
//! state file's routes beat the config file's).

mod check;
pub mod upstream;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use control::api::CertMeta;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use check::{check_certificate, load_pem};

use crate::conn::{Stream, TlsStream};

/// Longest SNI name looked up; longer ones match only the default.
const MAX_NAME: usize = 253;

/// Sessions each worker's cache keeps (TLS 1.2 session ids; TLS 1.3 uses
/// tickets).
pub const SESSION_CACHE: usize = 4096;

/// One certificate to serve, in precedence order (later wins a name).
pub struct CertInput<'a> {
    /// Chain, PEM, leaf first.
    pub cert_pem: &'a str,
    /// Key, PEM.
    pub key_pem: &'a str,
    /// Served when nothing else matches.
    pub default: bool,
    /// A name it serves besides its SANs (the API's domain, a route's vHost).
    pub name: Option<&'a str>,
}

/// Certificates by the names they serve: exact names, one-label wildcards
/// (`*.example.com` stored as `example.com`) and the default.
#[derive(Debug, Default)]
pub struct CertIndex {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    wild: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Each served certificate's domain (its given name, else its first
    /// SAN) and expiry, for /metrics and /health.
    expiries: Vec<(String, i64)>,
}

impl CertIndex {
    /// Indexes `inputs` (later entries win a name). A certificate that no
    /// longer checks out is skipped and named in the returned list.
    pub fn build(inputs: &[CertInput<'_>]) -> (CertIndex, Vec<String>) {
        let mut idx = CertIndex::default();
        let mut skipped = Vec::new();
        for input in inputs {
            let checked = match check::check(input.cert_pem, input.key_pem) {
                Ok(c) => c,
                Err((field, why)) => {
                    skipped.push(format!("{}: {field}: {why}", input.name.unwrap_or("certificate")));
                    continue;
                }
            };
            let Ok(key) = rustls::crypto::ring::sign::any_supported_type(&checked.key) else {
                continue;
            };
            if let Some(label) = input.name.or(checked.meta.sans.first().map(String::as_str)) {
                idx.expiries.push((label.to_string(), checked.meta.not_after));
            }
            let ck = Arc::new(CertifiedKey::new(checked.chain, key));
            let names = checked.meta.sans.iter().map(String::as_str).chain(input.name);
            for name in names {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => idx.wild.insert(suffix.into(), ck.clone()),
                    None => idx.exact.insert(name.into(), ck.clone()),
                };
            }
            if input.default {
                idx.default = Some(ck);
            }
        }
        (idx, skipped)
    }

    /// The certificate for an SNI name: exact, then wildcard, then the
    /// default. Lowercases into a stack buffer; allocates nothing.
    pub fn find(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let named = sni.filter(|n| n.len() <= MAX_NAME).and_then(|n| {
            let mut buf = [0u8; MAX_NAME];
            let n = n.trim_end_matches('.').as_bytes();
            let lower = &mut buf[..n.len()];
            lower.copy_from_slice(n);
            lower.make_ascii_lowercase();
            let name = std::str::from_utf8(lower).ok()?;
            self.exact.get(name).or_else(|| name.split_once('.').and_then(|(_, rest)| self.wild.get(rest)))
        });
        named.or(self.default.as_ref())
    }

    /// Each served certificate's domain and expiry (seconds since the epoch).
    pub fn expiries(&self) -> &[(String, i64)] {
        &self.expiries
    }

    /// Whether any certificate is indexed.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wild.is_empty() && self.default.is_none()
    }
}

impl ResolvesServerCert for CertIndex {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name()).cloned()
    }
}

/// What a snapshot carries for TLS (inside `control::messages::Opaque`).
pub struct TlsState {
    /// Server certificates.
    pub index: Arc<CertIndex>,
    /// TLS 1.3 only.
    pub tls13_only: bool,
    /// Longest handshake.
    pub handshake: Duration,
    /// Upstream TLS client configs, by backend TLS settings.
    pub upstream: upstream::ClientConfigs,
}

/// The ring provider (explicit: rustls builds configs with it).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Session-ticket keys shared by every worker, rotated by rustls (each
/// key encrypts for 6 hours and decrypts for 12).
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| rustls::crypto::ring::Ticketer::new().ok()).clone()
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

/// The versions offered: 1.3, and 1.2 unless `tls13_only` (never older).
fn versions(tls13_only: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls13_only {
        &TLS13_ONLY
    } else {
        &TLS12_UP
    }
}

/// A worker's server config over the shared certificates.
pub fn server_config(
    state: &TlsState,
    cache: Arc<dyn StoresServerSessions>,
    h2: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(state.tls13_only))?
        .with_no_client_auth()
        .with_cert_resolver(state.index.clone());
    // HTTP/2 first when offered (clients pick from what both speak).
    cfg.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    cfg.session_storage = cache;
    if let Some(t) = ticketer() {
        cfg.ticketer = t;
    }
    Ok(Arc::new(cfg))
}

/// A fatal `unrecognized_name` alert, in the clear (no keys yet).
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Reads the ClientHello (call it once the socket is readable), picks the
/// certificate by SNI (a handshake with none to offer gets
/// `unrecognized_name`), and runs the handshake, reading through a small
/// buffer of its own. The caller bounds the time.
pub async fn accept(mut tcp: TcpStream, config: Arc<ServerConfig>, index: &CertIndex) -> io::Result<Stream> {
    let mut buf = Vec::with_capacity(crate::conn::HANDSHAKE_READ);
    let scratch = &mut buf;
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        let v = std::mem::take(scratch);
        let end = v.capacity();
        let (res, slice) = tcp.read(v.slice_mut(0..end)).await;
        *scratch = slice.into_inner();
        let n = res?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut rd = &scratch[..n];
        while !rd.is_empty() {
            if acceptor.read_tls(&mut rd)? == 0 {
                break;
            }
        }
        scratch.clear();
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => {}
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = tcp.write_all(out).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    };
    if index.find(accepted.client_hello().server_name()).is_none() {
        let _ = tcp.write_all(UNRECOGNIZED_NAME.to_vec()).await;
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no certificate for this name"));
    }
    let conn = match accepted.into_connection(config) {
        Ok(c) => c,
        Err((e, mut alert)) => {
            let mut out = Vec::new();
            let _ = alert.write_all(&mut out);
            let _ = tcp.write_all(out).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    };
    let mut stream = TlsStream::new(tcp, rustls::Connection::Server(conn));
    stream.handshake(scratch).await?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Loads every certificate the config names (file paths become PEM text)
/// and checks it; an error names the field and the file. Also checks that
/// each `autoHttps` route has a certificate. Run before starting (and by
/// `ringway check`); returns the config certificates' metadata.
pub fn prepare(config: &mut control::model::Config) -> Result<Vec<(CertMeta, bool)>, String> {
    let mut metas = Vec::new();
    if let Some(tls) = &mut config.tls {
        for (i, c) in tls.certificates.iter_mut().enumerate() {
            let field = format!("tls.certificates[{i}]");
            c.cert = load_pem(&c.cert).map_err(|e| format!("{field}.cert: {e}"))?;
            c.key = load_pem(&c.key).map_err(|e| format!("{field}.key: {e}"))?;
            let meta = check_certificate(&c.cert, &c.key).map_err(|(f, why)| format!("{field}.{f}: {why}"))?;
            metas.push((meta, c.default));
        }
    }
    for (i, r) in config.routes.iter_mut().enumerate() {
        if let Some(ssl) = &mut r.ssl {
            let field = format!("routes[{i}].ssl");
            ssl.cert = load_pem(&ssl.cert).map_err(|e| format!("{field}.cert: {e}"))?;
            ssl.key = load_pem(&ssl.key).map_err(|e| format!("{field}.key: {e}"))?;
            check_certificate(&ssl.cert, &ssl.key).map_err(|(f, why)| format!("{field}.{f}: {why}"))?;
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        let covered =
            r.ssl.is_some() || metas.iter().any(|(m, _)| m.sans.iter().any(|n| control::model::name_covers(n, &r.key)));
        let acme_issues = config.acme.is_some() && r.vhost.acme_can_issue();
        if r.auto_https && !covered && !acme_issues {
            return Err(format!(
                "routes[{i}].autoHttps: no certificate serves {:?} (add one, set ssl, or configure acme)",
                r.key
            ));
        }
    }
    Ok(metas)
}

/// Appends `ringway_certificate_not_after_seconds{domain=…}` lines.
pub fn metrics(out: &mut String, expiries: &[(String, i64)]) {
    use std::fmt::Write;
    let _ =
        writeln!(out, "# HELP ringway_certificate_not_after_seconds When a served certificate expires (Unix time).");
    let _ = writeln!(out, "# TYPE ringway_certificate_not_after_seconds gauge");
    for (domain, not_after) in expiries {
        let d = domain.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "ringway_certificate_not_after_seconds{{domain=\"{d}\"}} {not_after}");
    }
}
