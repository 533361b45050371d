//! Certificate checks for `POST /api/v1/certificates`: the PEM parses, the
//! private key matches the certificate's public key, and the certificate is
//! valid now. rustls (ring provider) loads the key; x509-parser reads the
//! validity period, which rustls does not expose. TLS termination itself
//! comes in a later issue and will serve these certificates.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Checks a certificate chain and key; returns the leaf's expiry (seconds
/// since the epoch) or the field to blame and why.
pub fn check_certificate(cert_pem: &str, key_pem: &str) -> Result<i64, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert", format!("not PEM certificates: {e:?}")))?;
    let leaf = chain.first().ok_or(("cert", "no certificate in the PEM".to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ("key", format!("not a PEM private key: {e:?}")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| ("cert", format!("not an X.509 certificate: {e}")))?;
    let validity = x509.validity();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let not_after = validity.not_after.timestamp();
    if now > not_after {
        return Err(("cert", format!("expired at {}", validity.not_after)));
    }
    if now < validity.not_before.timestamp() {
        return Err(("cert", format!("not valid before {}", validity.not_before)));
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key", format!("unsupported private key: {e}")))?;
    match signing.public_key() {
        Some(spki) if spki.as_ref() == x509.public_key().raw => Ok(not_after),
        Some(_) => Err(("key", "the private key does not match the certificate".to_string())),
        None => Err(("key", "cannot derive the public key of this private key".to_string())),
    }
}
