//! warren-cluster
