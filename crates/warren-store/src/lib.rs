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
//! Engines: [`SledStore`] (on disk) and [`MemStore`] (tests). Both pass the
//! one [`conformance`] suite.
//!
//! On-disk format: log keys are the entry index as big-endian `u64` (so they
//! sort), every stored value starts with [`FORMAT_VERSION`], and the data
//! directory holds a `VERSION` file.

pub mod conformance;
mod error;
mod log_store;
mod mem_store;
mod sled_store;

pub use error::StoreError;
pub use log_store::{LogStore, SNAPSHOT_META_KEY};
pub use mem_store::MemStore;
pub use sled_store::{SledConfig, SledStore};

/// The version byte every stored value starts with, and the content of the
/// data directory's `VERSION` file. Bump it when the layout changes.
pub const FORMAT_VERSION: u8 = 1;
