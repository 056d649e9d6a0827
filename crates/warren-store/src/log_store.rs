//! The storage trait every engine implements.

use crate::error::StoreError;

/// A durable, ordered log of opaque entries plus a small key-value space for
/// metadata.
///
/// Every method blocks: call it from `spawn_blocking` or a storage thread,
/// never on an async runtime's worker. Methods documented as *durable* have
/// flushed to stable storage when they return `Ok`.
///
/// Indexes are contiguous by the caller's discipline (Raft never leaves a
/// hole); the store does not enforce it.
pub trait LogStore: Send + Sync + 'static {
    /// Writes `entries` (index, bytes), replacing any entry already at those
    /// indexes. Durable.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the engine fails to write or flush.
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError>;

    /// Entries with `start <= index < end_exclusive`, in index order.
    ///
    /// # Errors
    /// [`StoreError::Io`] on a read failure; [`StoreError::UnsupportedFormat`]
    /// or [`StoreError::Corrupt`] for a value this build cannot read.
    fn range(&self, start: u64, end_exclusive: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The smallest index present, or `None` if the log is empty.
    ///
    /// # Errors
    /// As for [`LogStore::range`].
    fn first_index(&self) -> Result<Option<u64>, StoreError>;

    /// The entry with the largest index, or `None` if the log is empty.
    ///
    /// # Errors
    /// As for [`LogStore::range`].
    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Removes every entry with `index >= from` (a conflicting suffix).
    /// Durable.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn truncate_from(&self, from: u64) -> Result<(), StoreError>;

    /// Removes every entry with `index <= through` (behind a snapshot).
    /// Durable.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn purge_through(&self, through: u64) -> Result<(), StoreError>;

    /// Stores `value` under `key` in the metadata space. Durable.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The value stored under `key`, if any.
    ///
    /// # Errors
    /// As for [`LogStore::range`].
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `key` from the metadata space. Durable.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn delete_meta(&self, key: &str) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk (0 for in-memory engines), for the
    /// metrics endpoint.
    fn size_on_disk(&self) -> u64;

    /// Replaces the stored snapshot with the concatenation of `parts`.
    /// Durable. By default it is kept under the metadata key
    /// [`SNAPSHOT_META_KEY`]; an engine with a directory writes a file
    /// instead, so a snapshot as large as every queued message does not go
    /// through its cache and write buffers.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    fn put_snapshot(&self, parts: &[&[u8]]) -> Result<(), StoreError> {
        self.put_meta(SNAPSHOT_META_KEY, &parts.concat())
    }

    /// The snapshot last stored with [`LogStore::put_snapshot`], if any.
    ///
    /// # Errors
    /// As for [`LogStore::range`].
    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_meta(SNAPSHOT_META_KEY)
    }

    /// The store that keeps this node's queued message bodies on disk, if
    /// the engine has one; without, bodies stay in memory (and in every
    /// snapshot).
    fn bodies(&self) -> Option<std::sync::Arc<crate::BodyStore>> {
        None
    }

    /// A directory on the real file system for short-lived files (a
    /// snapshot being sent or received), if the engine has one; else the
    /// system's temporary directory serves.
    fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// The metadata key of the snapshot in engines that keep it there (and in
/// sled data directories written before snapshots moved to a file).
pub const SNAPSHOT_META_KEY: &str = "raft/snapshot";

/// Prefixes `value` with the format version byte.
pub(crate) fn versioned(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(crate::FORMAT_VERSION);
    out.extend_from_slice(value);
    out
}

/// Checks and strips the format version byte of a stored value.
pub(crate) fn unversioned(key: impl FnOnce() -> String, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match stored.split_first() {
        None => Err(StoreError::Corrupt { key: key() }),
        Some((&crate::FORMAT_VERSION, rest)) => Ok(rest.to_vec()),
        Some((&found, _)) => Err(StoreError::UnsupportedFormat {
            key: key(),
            found,
            expected: crate::FORMAT_VERSION,
        }),
    }
}
