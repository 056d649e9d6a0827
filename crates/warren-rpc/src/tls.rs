//! Mutual TLS between nodes (ADR 0024): every node serves its cluster port
//! with its certificate and asks each caller for one; every node calls
//! with its certificate and checks the callee's. Both must chain to the
//! cluster's CA, so a peer needs a certificate of that CA besides the
//! secret.

use std::fmt;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The PEM files of a node's cluster TLS, read: the cluster CA, and this
/// node's certificate (it must name the node's advertised host, and allow
/// both server and client authentication) with its key.
#[derive(Clone)]
pub struct ClusterTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"(hidden)")
            .finish()
    }
}

impl ClusterTls {
    /// The server side: this node's identity, callers' certificates
    /// required and checked against the cluster CA.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side: the callee's certificate checked against the
    /// cluster CA (for the host it is called by), this node's sent.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}
