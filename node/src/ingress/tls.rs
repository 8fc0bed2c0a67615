//! TLS material for the ingress: a dev certificate generated once and kept under the data dir,
//! or a production certificate and key read from files. TLS 1.3 only, ALPN `settle/1`.

use super::IngressError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, generated on first start
    /// and saved as `DIR/cert.pem` and `DIR/key.pem` (the key readable by the owner only).
    Dev { dir: PathBuf },
    /// PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
}

/// Loaded certificate chain and key, with the path clients should trust.
#[derive(Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
}

/// Names the dev certificate is valid for.
const DEV_SUBJECT_ALT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn tls_err(what: impl std::fmt::Display) -> IngressError {
    IngressError::Tls(what.to_string())
}

pub fn load(source: &TlsSource) -> Result<TlsMaterial, IngressError> {
    let (cert, key) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::Dev { dir } => {
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                generate_dev(dir, &cert, &key)?;
            }
            (cert, key)
        }
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(tls_err(format!("{}: no certificate", cert.display())));
    }
    let private =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| tls_err(format!("{}: {e}", key.display())))?;
    Ok(TlsMaterial { chain, key: private, cert_path: cert })
}

fn generate_dev(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), IngressError> {
    std::fs::create_dir_all(dir).map_err(|e| tls_err(format!("{}: {e}", dir.display())))?;
    let names: Vec<String> = DEV_SUBJECT_ALT_NAMES.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
    // Key first, then certificate: a crash in between leaves no certificate, so the next start
    // generates both again instead of pairing a certificate with a missing key.
    write_private(key_path, certified.key_pair.serialize_pem().as_bytes())?;
    write_atomic(cert_path, certified.cert.pem().as_bytes())?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IngressError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| tls_err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| tls_err(format!("{}: {e}", path.display())))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IngressError> {
    super::private_file::write_private(path, bytes).map_err(|e| tls_err(format!("{}: {e}", path.display())))
}

/// The certificates of the CA(s) whose client certificates authenticate a connection (mutual
/// TLS), from a PEM file.
pub fn load_client_roots(path: &Path) -> Result<rustls::RootCertStore, IngressError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    for cert in certs {
        roots.add(cert).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(tls_err(format!("{}: no CA certificate", path.display())));
    }
    Ok(roots)
}

/// The rustls server configuration: ring provider chosen explicitly (never the process default),
/// TLS 1.3 only, ALPN `settle/1`. With `client_roots`, a client may present a certificate; one
/// that does not chain to these roots fails the handshake, and a client without one can still
/// authenticate with an API key.
pub fn server_crypto(
    material: TlsMaterial,
    client_roots: Option<rustls::RootCertStore>,
) -> Result<rustls::ServerConfig, IngressError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(material.chain, material.key).map_err(tls_err)?;
    config.alpn_protocols = vec![settle_wire::ALPN.to_vec()];
    Ok(config)
}

/// Bytes of the stateless-reset secret.
const RESET_SECRET_BYTES: usize = 64;

/// A secret kept in `path` (created with random bytes, owner-only, on first use).
pub fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, IngressError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == RESET_SECRET_BYTES => return Ok(bytes),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(tls_err(format!("{}: {e}", path.display()))),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| tls_err(format!("{}: {e}", dir.display())))?;
    }
    let mut bytes = vec![0u8; RESET_SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    write_private(path, &bytes)?;
    Ok(bytes)
}
