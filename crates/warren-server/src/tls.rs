//! The TLS side of the AMQPS listener (ADR 0023): PEM files in, a rustls
//! server configuration out, with errors that name the file at fault.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::AmqpsConfig;

/// The rustls configuration for `amqps`: the certificate chain and key,
/// and — with a CA file — client certificates asked for (required with
/// `fail_if_no_peer_cert`) and checked against those CAs. TLS 1.2 and 1.3,
/// rustls' safe defaults; ALPN unset (AMQP clients send none).
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does
/// not match the certificate.
pub fn server_config(amqps: &AmqpsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    // ring, not aws-lc-rs (ADR 0023): rustls 0.23.48 deprecates ring's
    // provider for its lack of post-quantum key exchange, a choice kept
    // for the build (aws-lc-rs needs cmake and minutes of C here).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&amqps.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&amqps.key_file)
        .with_context(|| format!("reading a private key (PEM) from {}", amqps.key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &amqps.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots
                    .add(cert)
                    .with_context(|| format!("a CA certificate in {}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if amqps.fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().context("the client certificate verifier")?)
        }
    };
    let config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            amqps.key_file.display(),
            amqps.cert_file.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates (PEM) from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("a certificate in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate (PEM) in {}", path.display());
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.path().join(name)
        }
    }

    /// A CA, a server certificate it signed, and that certificate's key.
    fn files() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("cert");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        std::fs::write(
            dir.path().join("other-key.pem"),
            rcgen::KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("write");
        std::fs::write(dir.path().join("empty.pem"), "").expect("write");
        Files { dir }
    }

    fn amqps(files: &Files, cert: &str, key: &str, ca: Option<&str>) -> AmqpsConfig {
        AmqpsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_file: files.path(cert),
            key_file: files.path(key),
            ca_file: ca.map(|name| files.path(name)),
            fail_if_no_peer_cert: ca.is_some(),
        }
    }

    #[test]
    fn pem_files_make_a_server_configuration_with_or_without_client_certificates() {
        let files = files();
        assert!(server_config(&amqps(&files, "cert.pem", "key.pem", None)).is_ok());
        assert!(server_config(&amqps(&files, "cert.pem", "key.pem", Some("ca.pem"))).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_the_file_named() {
        let files = files();
        for (cert, key, ca, says) in [
            ("missing.pem", "key.pem", None, "missing.pem"),
            ("empty.pem", "key.pem", None, "no certificate (PEM) in"),
            ("cert.pem", "empty.pem", None, "empty.pem"),
            ("cert.pem", "cert.pem", None, "reading a private key"),
            ("cert.pem", "other-key.pem", None, "does not fit"),
            ("cert.pem", "key.pem", Some("empty.pem"), "no certificate (PEM) in"),
            ("cert.pem", "key.pem", Some("key.pem"), "no certificate (PEM) in"),
        ] {
            let refused = server_config(&amqps(&files, cert, key, ca)).expect_err(says);
            assert!(
                format!("{refused:#}").contains(says),
                "{cert} {key} {ca:?}: {refused:#}"
            );
        }
    }
}
