//! TLS on the HTTP API: the rustls server configuration built from the PEM
//! files weft.toml names, and who a connection's client certificate says
//! the caller is.
//!
//! - `api_tls_cert`: the API's certificate chain (PEM, leaf first).
//! - `api_tls_key`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
//! - `api_client_ca`: optional CA certificates (PEM). With it, a client may
//!   present a certificate; one that does not chain to these CAs fails the
//!   handshake, one that does is a credential for every read scope
//!   ([`super::access`]). A client without a certificate still connects:
//!   decisions, health and updates need none.
//!
//! rustls runs with the `ring` provider and its default protocol versions
//! (TLS 1.2 and 1.3). The API speaks HTTP/1.1 only (ALPN `http/1.1`).
//! Every error names the file and the problem in one line; building a
//! configuration never panics on a file's contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// The files the API's TLS is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted (PEM); none: no mTLS.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![self.cert.clone(), self.key.clone()];
        p.extend(self.client_ca.clone());
        p
    }
}

/// A TLS file that cannot be used: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {reason}", path.display())]
pub struct TlsFileError {
    /// The weft.toml setting that names the file.
    pub setting: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why, in one line.
    pub reason: String,
}

fn bad(setting: &'static str, path: &Path, reason: impl ToString) -> TlsFileError {
    TlsFileError {
        setting,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The ring provider every TLS configuration of the node uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; at least one.
pub fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(setting, path, pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(setting, path, pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(bad(
            setting,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
        other => format!("is not valid PEM: {other:?}"),
    }
}

/// The API's server configuration from `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsFileError> {
    let chain = read_certs("api_tls_cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        bad(
            "api_tls_key",
            &files.key,
            match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
                }
                other => pem_reason(&other),
            },
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| bad("api_tls_cert", &files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("api_client_ca", ca)? {
                roots
                    .add(c)
                    .map_err(|e| bad("api_client_ca", ca, format!("holds a bad CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad("api_client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        bad(
            "api_tls_key",
            &files.key,
            format!("does not fit api_tls_cert: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a verified client certificate is named in the audit trail and the
/// log: `cert sha256:` and the first 16 hex digits of the SHA-256 of the
/// leaf certificate (what `openssl x509 -fingerprint -sha256` prints,
/// without colons, shortened).
pub fn cert_label(leaf: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(leaf.as_ref());
    format!("cert sha256:{}", &hex::encode(digest)[..16])
}
