//! TLS for PostgreSQL connections, with libpq's `sslmode` semantics, on rustls.
//!
//! | sslmode | certificate checks |
//! |---|---|
//! | `require`, `prefer`, `allow` | none, unless the root certificate file exists: then the chain (libpq's rule) |
//! | `verify-ca` | the chain must end in a certificate of `sslrootcert` |
//! | `verify-full` | the chain, and the certificate must name the host connected to |
//!
//! The root file is `sslrootcert`, else `~/.postgresql/root.crt`. After the handshake,
//! [`channel_binding_hash`] gives SCRAM-SHA-256-PLUS its `tls-server-end-point` data: the
//! hash of the server certificate with the certificate's own signature hash (SHA-1 and MD5
//! replaced by SHA-256), as RFC 5929 and PostgreSQL specify.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;

use crate::conninfo::SslMode;

/// TLS could not be set up before connecting.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// verify-ca / verify-full without a root certificate file.
    #[error("root certificate file \"{}\" does not exist; provide it with sslrootcert, or use a weaker sslmode than {}", path.display(), mode.as_str())]
    NoRootCert {
        /// Where it was looked for.
        path: PathBuf,
        /// The mode that needs it.
        mode: SslMode,
    },
    /// The root certificate file could not be read or holds no certificate.
    #[error("cannot use root certificate file \"{}\": {why}", path.display())]
    BadRootCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The default root certificate file, `~/.postgresql/root.crt`.
fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"))
}

/// Builds the client configuration for `mode`. `rootcert` is the `sslrootcert` setting.
pub fn client_config(mode: SslMode, rootcert: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let root_path = rootcert.map(Path::to_path_buf).or_else(default_root_cert);
    let root_exists = root_path.as_deref().is_some_and(Path::is_file);
    let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if verify && !root_exists {
        return Err(TlsSetupError::NoRootCert { path: root_path.unwrap_or_else(|| PathBuf::from("~/.postgresql/root.crt")), mode });
    }
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match (root_exists, root_path) {
        (true, Some(path)) => {
            let roots = load_roots(&path)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsSetupError::BadRootCert { path: path.clone(), why: e.to_string() })?;
            Arc::new(ChainVerifier { inner: webpki, check_name: mode == SslMode::VerifyFull })
        }
        _ => Arc::new(NoCertificateCheck(provider())),
    };
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let bad = |why: String| TlsSetupError::BadRootCert { path: path.to_owned(), why };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(roots)
}

/// The name to present in SNI and to check the certificate against.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        // Host names rustls cannot represent still get a TLS session; only verify-full
        // checks the name, and then the mismatch is reported by the verifier.
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("static DNS name is valid"))
}

/// Verifies the chain against the roots, and the host name only when asked (verify-full).
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `sslmode=require` without a root file: encryption without authentication of the server,
/// exactly what libpq does. The handshake signature is still checked, so the session is at
/// least bound to the certificate's key.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `tls-server-end-point` channel-binding data for the server certificate `cert` (DER),
/// or `None` when its signature algorithm names no hash (e.g. Ed25519), in which case SCRAM
/// runs without channel binding.
pub fn channel_binding_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let oid = parsed.signature_algorithm.algorithm.to_id_string();
    let hash = match oid.as_str() {
        // md5WithRSA, sha1WithRSA, ecdsa-with-SHA1, sha256WithRSA, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4" | "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.3.2" => sha2::Sha256::digest(cert).to_vec(),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert).to_vec(),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert).to_vec(),
        _ => return None,
    };
    Some(hash)
}
