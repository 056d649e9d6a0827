//! The sled engine.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::log_store::{unversioned, versioned, LogStore, SNAPSHOT_META_KEY};
use crate::FORMAT_VERSION;

const VERSION_FILE: &str = "VERSION";
const SLED_DIR: &str = "sled";
const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
/// The file sled 0.34 keeps its pages in, inside [`SLED_DIR`].
const SLED_DATA_FILE: &str = "db";
/// sled reports a held directory lock only through this message text.
const LOCK_ERROR_TEXT: &str = "could not acquire lock";
/// The snapshot, in the data directory: the format version byte, then the
/// bytes given to `put_snapshot`. Written to `SNAPSHOT_TMP`, synced, then
/// renamed over it.
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

/// Tuning of a [`SledStore`].
#[derive(Clone, Debug)]
pub struct SledConfig {
    /// sled's page cache size. Set explicitly: sled's default (1 GiB) is
    /// too much for small machines and too little to matter for large ones.
    pub cache_capacity_bytes: u64,
    /// How long to retry opening while the directory is still locked. A
    /// just-dropped `Db` in this process can hold the lock for a moment
    /// while its background flusher stops.
    pub lock_retry_for: Duration,
}

impl Default for SledConfig {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 256 * 1024 * 1024,
            lock_retry_for: Duration::from_secs(5),
        }
    }
}

/// A [`LogStore`] on sled. Open one per data directory per process.
pub struct SledStore {
    /// The data directory (the snapshot file lives there).
    dir: PathBuf,
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// sled's data file, opened again to `fdatasync` it after every
    /// flush: sled 0.34's `flush` is `sync_file_range`, which persists
    /// neither the file's size nor the device cache (issue 9).
    data_file: Option<fs::File>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `data_dir`. Blocks: it reads
    /// the disk and may sleep while retrying a held lock.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedDataDir`] if the directory's `VERSION` file
    /// names another layout, [`StoreError::Locked`] if the directory stays
    /// locked for `config.lock_retry_for`, [`StoreError::Io`] otherwise.
    pub fn open(data_dir: &Path, config: &SledConfig) -> Result<Self, StoreError> {
        fs::create_dir_all(data_dir).map_err(|e| StoreError::io("create data directory", e))?;
        check_or_write_version_file(data_dir)?;
        let db = open_with_lock_retry(&data_dir.join(SLED_DIR), config)?;
        let log = db.open_tree(LOG_TREE).map_err(|e| StoreError::io("open log tree", e))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| StoreError::io("open meta tree", e))?;
        let data_file = fs::File::open(data_dir.join(SLED_DIR).join(SLED_DATA_FILE)).ok();
        if data_file.is_none() {
            tracing::warn!(dir = %data_dir.display(), "sled's data file not found: flushes are not fsynced");
        }
        Ok(Self {
            dir: data_dir.to_path_buf(),
            db,
            log,
            meta,
            data_file,
        })
    }

    fn flush(&self, operation: &'static str) -> Result<(), StoreError> {
        // `flush`, not `flush_async`: the latter has known deadlocks in 0.34.
        self.db.flush().map_err(|e| StoreError::io(operation, e))?;
        if let Some(file) = &self.data_file {
            file.sync_data().map_err(|e| StoreError::io(operation, e))?;
        }
        Ok(())
    }

    fn remove_keys(&self, keys: Vec<sled::IVec>, operation: &'static str) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| StoreError::io(operation, e))?;
        self.flush(operation)
    }
}

fn check_or_write_version_file(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(VERSION_FILE);
    match fs::read_to_string(&path) {
        Ok(found) if found.trim() == FORMAT_VERSION.to_string() => Ok(()),
        Ok(found) => Err(StoreError::UnsupportedDataDir {
            dir: data_dir.to_path_buf(),
            found: found.trim().to_owned(),
            expected: FORMAT_VERSION,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if data_dir.join(SLED_DIR).exists() {
                return Err(StoreError::UnsupportedDataDir {
                    dir: data_dir.to_path_buf(),
                    found: "(no VERSION file)".to_owned(),
                    expected: FORMAT_VERSION,
                });
            }
            let mut file = fs::File::create(&path).map_err(|e| StoreError::io("write VERSION file", e))?;
            writeln!(file, "{FORMAT_VERSION}").map_err(|e| StoreError::io("write VERSION file", e))?;
            file.sync_all().map_err(|e| StoreError::io("write VERSION file", e))?;
            Ok(())
        }
        Err(e) => Err(StoreError::io("read VERSION file", e)),
    }
}

fn open_with_lock_retry(path: &PathBuf, config: &SledConfig) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains(LOCK_ERROR_TEXT) => {
                if started.elapsed() >= config.lock_retry_for {
                    return Err(StoreError::Locked {
                        dir: path.clone(),
                        reason: e.to_string(),
                    });
                }
                tracing::debug!(dir = ?path, "sled directory still locked, retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(StoreError::io("open sled", e)),
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        key: format!("log key {key:?}"),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<(u64, Vec<u8>), StoreError> {
    let index = key_index(key)?;
    Ok((index, unversioned(|| format!("log/{index}"), value)?))
}

impl LogStore for SledStore {
    fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.dir.clone())
    }

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index_key(*index), versioned(bytes));
        }
        self.log.apply_batch(batch).map_err(|e| StoreError::io("append", e))?;
        self.flush("append")
    }

    fn range(&self, start: u64, end_exclusive: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end_exclusive {
            return Ok(Vec::new());
        }
        self.log
            .range(index_key(start)..index_key(end_exclusive))
            .map(|kv| {
                let (key, value) = kv.map_err(|e| StoreError::io("read log range", e))?;
                decode_entry(&key, &value)
            })
            .collect()
    }

    fn first_index(&self) -> Result<Option<u64>, StoreError> {
        match self
            .log
            .first()
            .map_err(|e| StoreError::io("read first log entry", e))?
        {
            Some((key, _)) => Ok(Some(key_index(&key)?)),
            None => Ok(None),
        }
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.log.last().map_err(|e| StoreError::io("read last log entry", e))? {
            Some((key, value)) => Ok(Some(decode_entry(&key, &value)?)),
            None => Ok(None),
        }
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        let keys = self
            .log
            .range(index_key(from)..)
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::io("truncate log", e))?;
        self.remove_keys(keys, "truncate log")
    }

    fn purge_through(&self, through: u64) -> Result<(), StoreError> {
        let keys = self
            .log
            .range(..=index_key(through))
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::io("purge log", e))?;
        self.remove_keys(keys, "purge log")
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta
            .insert(key.as_bytes(), versioned(value))
            .map_err(|e| StoreError::io("write meta", e))?;
        self.flush("write meta")
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .meta
            .get(key.as_bytes())
            .map_err(|e| StoreError::io("read meta", e))?
        {
            Some(value) => Ok(Some(unversioned(|| format!("meta/{key}"), &value)?)),
            None => Ok(None),
        }
    }

    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        self.meta
            .remove(key.as_bytes())
            .map_err(|e| StoreError::io("delete meta", e))?;
        self.flush("delete meta")
    }

    fn size_on_disk(&self) -> u64 {
        let snapshot = fs::metadata(self.dir.join(SNAPSHOT_FILE)).map_or(0, |m| m.len());
        self.db.size_on_disk().unwrap_or(0) + snapshot
    }

    fn put_snapshot(&self, parts: &[&[u8]]) -> Result<(), StoreError> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let file = fs::File::create(&tmp).map_err(|e| StoreError::io("create snapshot file", e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[FORMAT_VERSION])
            .map_err(|e| StoreError::io("write snapshot file", e))?;
        for part in parts {
            out.write_all(part)
                .map_err(|e| StoreError::io("write snapshot file", e))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| StoreError::io("write snapshot file", e.error().to_string()))?;
        file.sync_all().map_err(|e| StoreError::io("sync snapshot file", e))?;
        drop(file);
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE)).map_err(|e| StoreError::io("rename snapshot file", e))?;
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::io("sync data directory", e))?;
        // A data directory from before snapshots moved to a file.
        if self
            .meta
            .contains_key(SNAPSHOT_META_KEY.as_bytes())
            .map_err(|e| StoreError::io("read meta", e))?
        {
            self.delete_meta(SNAPSHOT_META_KEY)?;
        }
        Ok(())
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut bytes = match fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.get_meta(SNAPSHOT_META_KEY),
            Err(e) => return Err(StoreError::io("read snapshot file", e)),
        };
        match bytes.first() {
            None => Err(StoreError::Corrupt {
                key: SNAPSHOT_FILE.to_owned(),
            }),
            Some(&FORMAT_VERSION) => {
                bytes.remove(0);
                Ok(Some(bytes))
            }
            Some(&found) => Err(StoreError::UnsupportedFormat {
                key: SNAPSHOT_FILE.to_owned(),
                found,
                expected: FORMAT_VERSION,
            }),
        }
    }
}
