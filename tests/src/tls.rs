//! Test certificates: a CA, a server certificate it signed, and an unrelated CA.
//!
//! Generated afresh for each cluster with `rcgen` (ECDSA P-256, valid 1975–4096), so nothing
//! secret lives in the repository and no certificate expires under CI.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM texts for one cluster.
pub(crate) struct TestPki {
    /// The CA that signed the server certificate (`sslrootcert` for `verify-full`).
    pub ca_pem: String,
    /// Server certificate: SANs `localhost` and IP `127.0.0.1`, CN `localhost`.
    pub server_cert_pem: String,
    /// Server private key (PKCS#8).
    pub server_key_pem: String,
    /// A second, self-signed CA that signed nothing here, for verification failures.
    pub wrong_ca_pem: String,
}

impl TestPki {
    pub(crate) fn generate() -> anyhow::Result<TestPki> {
        let (ca, ca_key) = new_ca("barman-rs test CA")?;
        let (wrong_ca, _) = new_ca("barman-rs unrelated test CA")?;

        let server_key = KeyPair::generate().context("generating server key")?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .context("server certificate parameters")?;
        params.distinguished_name = name("localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let server = params
            .signed_by(&server_key, &ca, &ca_key)
            .context("signing server certificate")?;

        Ok(TestPki {
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            wrong_ca_pem: wrong_ca.pem(),
        })
    }
}

fn new_ca(common_name: &str) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate().context("generating CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).context("self-signing CA")?;
    Ok((cert, key))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
