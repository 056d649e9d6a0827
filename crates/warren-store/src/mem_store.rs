//! An in-memory engine for tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::StoreError;
use crate::log_store::LogStore;

/// A [`LogStore`] that keeps everything in memory. "Durable" means "until
/// the value is dropped"; clone the `Arc` around it to simulate a restart.
#[derive(Debug, Default)]
pub struct MemStore {
    log: Mutex<BTreeMap<u64, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every mutation is a single map operation), so poison is harmless.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn meta(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogStore for MemStore {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut log = self.log();
        for (index, bytes) in entries {
            log.insert(*index, bytes.clone());
        }
        Ok(())
    }

    fn range(&self, start: u64, end_exclusive: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end_exclusive {
            return Ok(Vec::new());
        }
        Ok(self
            .log()
            .range(start..end_exclusive)
            .map(|(index, bytes)| (*index, bytes.clone()))
            .collect())
    }

    fn first_index(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.log().keys().next().copied())
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .log()
            .iter()
            .next_back()
            .map(|(index, bytes)| (*index, bytes.clone())))
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        drop(self.log().split_off(&from));
        Ok(())
    }

    fn purge_through(&self, through: u64) -> Result<(), StoreError> {
        let mut log = self.log();
        let kept = match through.checked_add(1) {
            Some(first_kept) => log.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        *log = kept;
        Ok(())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta().get(key).cloned())
    }

    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.meta().remove(key);
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}
