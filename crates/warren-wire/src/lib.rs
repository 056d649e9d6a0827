//! warren-wire
