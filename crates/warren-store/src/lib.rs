//! warren-store
