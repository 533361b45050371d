//! TLS to backends: client configs (system roots or a CA file, or no
//! verification when a backend asks for it explicitly) and the connect
//! path. Configs are built on the control side, once per distinct CA
//! setting, and shared by every worker.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::conn::{Stream, TlsStream};

/// Where Debian, Fedora and Alpine keep the system's trusted roots.
const SYSTEM_ROOTS: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// How a backend's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The system's roots.
    System,
    /// Roots from this PEM file.
    CaFile(PathBuf),
    /// None (`insecureSkipVerify`).
    Nothing,
}

impl Trust {
    /// The trust a backend's TLS settings ask for.
    pub fn of(t: &control::model::BackendTls) -> Trust {
        if t.insecure_skip_verify {
            Trust::Nothing
        } else if let Some(ca) = &t.ca_file {
            Trust::CaFile(ca.clone())
        } else {
            Trust::System
        }
    }
}

/// Client configs by trust setting.
#[derive(Default)]
pub struct ClientConfigs {
    by_trust: HashMap<Trust, Arc<ClientConfig>>,
}

impl ClientConfigs {
    /// Builds a config for every trust in `wanted` (reading CA files);
    /// one that cannot be built is left out and reported.
    pub fn build<'a>(wanted: impl Iterator<Item = &'a Trust>) -> (ClientConfigs, Vec<String>) {
        let mut out = ClientConfigs::default();
        let mut errors = Vec::new();
        for t in wanted {
            if out.by_trust.contains_key(t) {
                continue;
            }
            match client_config(t) {
                Ok(c) => {
                    out.by_trust.insert(t.clone(), c);
                }
                Err(e) => errors.push(e),
            }
        }
        (out, errors)
    }

    /// The config for a trust setting, if it could be built.
    pub fn get(&self, t: &Trust) -> Option<&Arc<ClientConfig>> {
        self.by_trust.get(t)
    }
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| format!("{}: {e:?}", path.display()))?;
        let _ = roots.add(der);
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificates", path.display()));
    }
    Ok(roots)
}

fn client_config(t: &Trust) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::versions(false))
        .map_err(|e| e.to_string())?;
    let mut cfg = match t {
        Trust::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(super::provider())))
            .with_no_client_auth(),
        Trust::CaFile(p) => builder.with_root_certificates(roots_from(p)?).with_no_client_auth(),
        Trust::System => {
            let roots = SYSTEM_ROOTS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| "no system CA bundle found".to_string())
                .and_then(roots_from)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any certificate, but still checks the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a TLS backend is reached by (SNI, and the name verified): its
/// `sni`, else a literal `hostHeader`'s host, else its hostname (a pooled
/// connection cannot follow each client's Host). `None`: not TLS.
pub fn server_name<'a>(b: &'a control::model::Backend, host: &'a control::model::HostHeader) -> Option<&'a str> {
    let t = b.tls.as_ref()?;
    Some(match (&t.sni, host) {
        (Some(s), _) => s.as_str(),
        (None, control::model::HostHeader::Literal(v)) => crate::http::host_without_port(v),
        (None, _) => b.hostname.trim_start_matches('[').trim_end_matches(']'),
    })
}

/// Runs a client handshake over `tcp` (reads through `scratch`, left
/// empty). The caller bounds the time.
pub async fn connect(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    scratch: &mut Vec<u8>,
) -> io::Result<Stream> {
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, rustls::Connection::Client(conn));
    stream.handshake(scratch).await?;
    Ok(Stream::Tls(Box::new(stream)))
}
