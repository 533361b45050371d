//! Certificate checks, for the API, the config file and route `ssl`: the
//! PEM parses, the chain is in order (each certificate issued by the next),
//! the private key matches the leaf, and the leaf is valid now. rustls
//! (ring provider) loads the key; x509-parser reads what rustls does not
//! expose (validity, names, issuer).

use control::api::CertMeta;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// A checked certificate: what `check_certificate` learned plus the parts
/// rustls serves with.
pub(crate) struct Checked {
    pub(crate) meta: CertMeta,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Checks a certificate chain and key; returns its expiry, names and
/// issuer, or the field to blame (`cert` or `key`) and why.
pub fn check_certificate(cert_pem: &str, key_pem: &str) -> Result<CertMeta, (&'static str, String)> {
    check(cert_pem, key_pem).map(|c| c.meta)
}

pub(crate) fn check(cert_pem: &str, key_pem: &str) -> Result<Checked, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert", format!("not PEM certificates: {e:?}")))?;
    if chain.is_empty() {
        return Err(("cert", "no certificate in the PEM".to_string()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ("key", format!("not a PEM private key: {e:?}")))?;
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| ("cert", format!("certificate {i} is not X.509: {e}")))?;
        parsed.push(x);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err((
                "cert",
                format!(
                    "chain out of order: certificate {i} ({}) is not issued by certificate {} ({}); put the leaf first, then each issuer",
                    pair[0].subject(),
                    i + 1,
                    pair[1].subject()
                ),
            ));
        }
    }
    let x509 = &parsed[0];
    let validity = x509.validity();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let not_after = validity.not_after.timestamp();
    let not_before = validity.not_before.timestamp();
    if now > not_after {
        return Err(("cert", format!("expired at {}", validity.not_after)));
    }
    if now < validity.not_before.timestamp() {
        return Err(("cert", format!("not valid before {}", validity.not_before)));
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key", format!("unsupported private key: {e}")))?;
    match signing.public_key() {
        Some(spki) if spki.as_ref() == x509.public_key().raw => {}
        Some(_) => return Err(("key", "the private key does not match the certificate".to_string())),
        None => return Err(("key", "cannot derive the public key of this private key".to_string())),
    }
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let GeneralName::DNSName(d) = n {
                sans.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if sans.is_empty() {
        // No subjectAltName: the subject's common name, as old certificates did.
        if let Some(cn) = x509.subject().iter_common_name().next().and_then(|c| c.as_str().ok()) {
            sans.push(cn.to_ascii_lowercase());
        }
    }
    let issuer = x509.issuer().to_string();
    let chain: Vec<CertificateDer<'static>> = chain.into_iter().map(|c| c.into_owned()).collect();
    Ok(Checked { meta: CertMeta { not_after, not_before, sans, issuer }, chain, key: key.clone_key() })
}

/// PEM text as given, or the contents of the file it names.
pub fn load_pem(source: &str) -> Result<String, String> {
    if source.contains("-----BEGIN") {
        return Ok(source.to_string());
    }
    std::fs::read_to_string(source).map_err(|e| format!("{source}: {e}"))
}
