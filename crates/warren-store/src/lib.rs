//! `warren-store`: where Warren keeps its Raft log and the little metadata
//! around it (vote, purge point, snapshot).
//!
//! It sits below `warren-cluster` (the openraft glue) and knows nothing of
//! Raft or of the broker: entries and metadata values are opaque bytes. The
//! [`LogStore`] trait is blocking on purpose — sled's API blocks — so callers
//! on an async runtime must use it from `spawn_blocking` or a dedicated
//! thread. No `sled::` type crosses this crate's boundary, so the engine can
//! be replaced if measurements demand.
//!
//! Queued message bodies live beside the log in a [`BodyStore`] (the
//! segment engine has one; the others keep bodies in memory).
//!
//! Engines: [`SegmentStore`] (on disk, Warren's own segment files with an
//! fdatasync behind every durable write; the default for new data
//! directories), [`SledStore`] (on disk; data directories written before
//! the segment engine), and [`MemStore`] (tests). All pass the one
//! [`conformance`] suite; [`vfs::PowerCutFs`] lets the segment engine be
//! tested against power cuts.
//!
//! On-disk format: log keys are the entry index as big-endian `u64` (so they
//! sort), every stored value starts with [`FORMAT_VERSION`], and the data
//! directory holds a `VERSION` file.

mod body_store;
pub mod conformance;
mod error;
mod log_store;
mod mem_store;
mod segment_store;
mod sled_store;
pub mod vfs;

pub use body_store::{BodyConfig, BodyRef, BodyStore, BODY_DIR};
pub use error::StoreError;
pub use log_store::{LogStore, SNAPSHOT_META_KEY};
pub use mem_store::MemStore;
pub use segment_store::{SegmentConfig, SegmentStore, SEGMENT_FORMAT_VERSION};
pub use sled_store::{SledConfig, SledStore};

/// The version byte every stored value starts with, and the content of the
/// data directory's `VERSION` file. Bump it when the layout changes.
pub const FORMAT_VERSION: u8 = 1;

/// Opens the store of `data_dir` with the engine that wrote it: sled for a
/// directory whose `VERSION` is [`FORMAT_VERSION`] (or that holds a `sled`
/// directory), the segment engine otherwise (new directories included).
/// Blocks.
///
/// # Errors
/// As [`SegmentStore::open`] or [`SledStore::open`].
pub fn open_data_dir(
    data_dir: &std::path::Path,
    sled: &SledConfig,
    segments: &SegmentConfig,
) -> Result<std::sync::Arc<dyn LogStore>, StoreError> {
    let version = std::fs::read_to_string(data_dir.join("VERSION")).unwrap_or_default();
    let sled_dir =
        version.trim() == FORMAT_VERSION.to_string() || (version.trim().is_empty() && data_dir.join("sled").exists());
    if sled_dir {
        tracing::warn!(
            dir = %data_dir.display(),
            "data directory written by the sled engine: opening it with sled (fsync of its data file after every flush)"
        );
        return Ok(std::sync::Arc::new(SledStore::open(data_dir, sled)?));
    }
    Ok(std::sync::Arc::new(SegmentStore::open(data_dir, segments)?))
}
