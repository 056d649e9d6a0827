//! Certificates for the AMQPS tests (ADR 0023), made at test time with
//! rcgen: a CA, a server certificate for `localhost` it signed, a client
//! certificate it signed, and a client certificate of another CA.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// PEM files in a temporary directory, removed on drop.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes the CA, the server's and the clients' certificates and keys.
    ///
    /// # Errors
    /// Generating or writing them failed.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("warren-e2e-tls-")
            .tempdir()
            .context("temporary dir")?;
        let (ca, ca_key) = authority("Warren test CA")?;
        let (other_ca, other_key) = authority("Some other CA")?;
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).with_context(|| format!("writing {name}"))
        };
        write("ca.pem", ca.pem())?;
        for (name, sans, issuer, issuer_key) in [
            ("server", vec!["localhost".to_owned()], &ca, &ca_key),
            // A user's, named by its subject (the EXTERNAL mechanism, ADR 0031).
            ("alice", vec!["alice".to_owned()], &ca, &ca_key),
            // A cluster node's, for loopback addresses (ADR 0024).
            (
                "node",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                &ca,
                &ca_key,
            ),
            ("other-node", vec!["127.0.0.1".to_owned()], &other_ca, &other_key),
            ("client", vec!["client".to_owned()], &ca, &ca_key),
            ("stranger", vec!["stranger".to_owned()], &other_ca, &other_key),
        ] {
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(sans)?;
            if name == "alice" {
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.distinguished_name.push(rcgen::DnType::CountryName, "GB");
                params
                    .distinguished_name
                    .push(rcgen::DnType::OrganizationName, "Warren Tests");
                params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
            }
            let cert = params.signed_by(&key, issuer, issuer_key)?;
            write(&format!("{name}.pem"), cert.pem())?;
            write(&format!("{name}-key.pem"), key.serialize_pem())?;
        }
        Ok(Self { dir })
    }

    /// The subject of `alice.pem`, as RabbitMQ writes it.
    pub const ALICE_DN: &'static str = "CN=alice,O=Warren Tests,C=GB";

    /// The path of one of the files: `ca.pem`, `server.pem`,
    /// `server-key.pem`, `alice.pem`, `alice-key.pem` (subject
    /// [`Self::ALICE_DN`]), `client.pem`, `client-key.pem`, `stranger.pem`,
    /// `stranger-key.pem`, `node.pem`, `node-key.pem` (for 127.0.0.1),
    /// `other-node.pem`, `other-node-key.pem` (127.0.0.1, another CA).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory holding them.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Configuration-file lines for an AMQPS listener on an ephemeral
    /// loopback port with the server's certificate; with client
    /// certificates required and checked against the CA if `mutual`.
    pub fn config_toml(&self, mutual: bool) -> String {
        let mut toml = format!(
            "amqps_listen = \"127.0.0.1:0\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            self.path("server.pem"),
            self.path("server-key.pem")
        );
        if mutual {
            toml.push_str(&format!(
                "tls_ca_file = {:?}\ntls_fail_if_no_peer_cert = true\n",
                self.path("ca.pem")
            ));
        }
        toml
    }
}

impl TestPki {
    /// Configuration-file lines for mutual TLS between nodes with the
    /// `node` certificate (every node on loopback shares it).
    pub fn cluster_config_toml(&self) -> String {
        format!(
            "cluster_tls_ca_file = {:?}\ncluster_tls_cert_file = {:?}\ncluster_tls_key_file = {:?}\n",
            self.path("ca.pem"),
            self.path("node.pem"),
            self.path("node-key.pem")
        )
    }

    /// `warren ctl` options for the cluster CA and a certificate named
    /// `name` (`node`, `other-node`).
    pub fn ctl_args(&self, name: &str) -> Vec<String> {
        vec![
            "--cluster-tls-ca-file".to_owned(),
            self.path("ca.pem").to_string_lossy().into_owned(),
            "--cluster-tls-cert-file".to_owned(),
            self.path(&format!("{name}.pem")).to_string_lossy().into_owned(),
            "--cluster-tls-key-file".to_owned(),
            self.path(&format!("{name}-key.pem")).to_string_lossy().into_owned(),
        ]
    }
}

fn authority(name: &str) -> anyhow::Result<(rcgen::Certificate, rcgen::KeyPair)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}
