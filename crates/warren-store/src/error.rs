//! Errors of the storage layer.

use std::path::PathBuf;

use thiserror::Error;

/// A storage operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The engine reported an I/O or internal error.
    #[error("storage I/O error during {operation}: {reason}")]
    Io { operation: &'static str, reason: String },
    /// A stored value does not start with a known format version.
    #[error("stored value under {key} has format version {found}, this build reads {expected}")]
    UnsupportedFormat { key: String, found: u8, expected: u8 },
    /// A stored value is empty (no version byte): the store is damaged.
    #[error("stored value under {key} is empty (no format version byte)")]
    Corrupt { key: String },
    /// The data directory was written by another layout version.
    #[error("data directory {dir:?} has layout version {found:?}, this build uses {expected}")]
    UnsupportedDataDir { dir: PathBuf, found: String, expected: u8 },
    /// The data directory is locked by another open store (in this or another
    /// process) and stayed locked while we retried.
    #[error("data directory {dir:?} is locked by another process: {reason}")]
    Locked { dir: PathBuf, reason: String },
}

impl StoreError {
    pub(crate) fn io(operation: &'static str, reason: impl ToString) -> Self {
        StoreError::Io {
            operation,
            reason: reason.to_string(),
        }
    }
}
