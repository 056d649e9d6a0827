//! The segment engine: Warren's own append-only log files, with an
//! `fdatasync` behind every durable write (issue 9, ADR 0012).
//!
//! Layout of a data directory (`VERSION` holds [`SEGMENT_FORMAT_VERSION`]):
//!
//! ```text
//! VERSION              "2"
//! LOCK                 held (flock) while a process has the store open
//! log/00000000000000000001.seg   records, named by their first index
//! meta                 the metadata map, replaced atomically
//! snapshot             the version byte, then the snapshot bytes
//! ```
//!
//! A record is `len: u32 LE | crc32: u32 LE | index: u64 LE | payload`,
//! the CRC over index and payload. Records in a segment, and segments in
//! name order, have strictly increasing indexes. An append writes its
//! records at the end of the last segment and syncs it before returning;
//! a new segment is created (and the directory synced) once the last one
//! holds [`SegmentConfig::segment_bytes`]. Reading back at open stops at
//! the first record that is short, fails its CRC or does not increase:
//! that can only be a torn write at the tail of the last segment (earlier
//! segments were synced whole before the next was created), so the tail is
//! cut there. A bad record anywhere else is corruption, and the store
//! refuses to open rather than silently drop acknowledged entries.
//!
//! Metadata (Raft's vote, the purge point) and the snapshot are written to
//! a temporary file, synced, renamed over the old one, and the directory
//! synced: a power cut leaves the old or the new value, never a mix.
//!
//! Every method takes `&self`; mutations are serialized by one lock held
//! for their whole length, reads take only the short-lived index lock, so
//! a reader never waits for an fsync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::log_store::LogStore;
use crate::vfs::{RealFs, Vfs, VfsFile};

/// The layout version of a segment data directory (`VERSION` file, meta
/// and snapshot files' first byte). Version 1 is the sled layout.
pub const SEGMENT_FORMAT_VERSION: u8 = 2;

const VERSION_FILE: &str = "VERSION";
const LOCK_FILE: &str = "LOCK";
const LOG_DIR: &str = "log";
const SEGMENT_SUFFIX: &str = ".seg";
const META_FILE: &str = "meta";
const META_TMP: &str = "meta.tmp";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// The store's own metadata key: entries at or below it are purged even if
/// their records are still in a segment file.
const PURGED_KEY: &str = "warren-store/purged-through";
const RECORD_HEADER: u64 = 16;

/// Tuning of a [`SegmentStore`].
#[derive(Clone, Debug)]
pub struct SegmentConfig {
    /// A segment is closed and a new one started once it holds this many
    /// bytes (a batch is never split, so a segment may exceed it).
    pub segment_bytes: u64,
    /// The body store's segments and cache.
    pub bodies: crate::BodyConfig,
    /// How long to retry while another store in this process still holds
    /// the directory's lock (a node being restarted in a test).
    pub lock_retry_for: Duration,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            bodies: crate::BodyConfig::default(),
            lock_retry_for: Duration::from_secs(5),
        }
    }
}

/// Entries found in the index: index, where its record is, its file.
type Located = Vec<(u64, Location, Arc<dyn VfsFile>)>;

/// Where an entry's record is.
#[derive(Clone, Copy, Debug)]
struct Location {
    /// The segment (its name: the first index written to it).
    segment: u64,
    /// Offset of the record's header in the segment.
    offset: u64,
    payload_len: u32,
}

struct Segment {
    file: Arc<dyn VfsFile>,
    len: u64,
    /// The largest index recorded in it, purged ones included.
    last_index: Option<u64>,
}

#[derive(Default)]
struct Index {
    segments: BTreeMap<u64, Segment>,
    entries: BTreeMap<u64, Location>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Bumped whenever entries are cut or their files removed: a reader
    /// that saw it change while reading may hold a mix of two logs.
    generation: u64,
}

/// A [`LogStore`] on segment files of its own, through a [`Vfs`].
pub struct SegmentStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    log_dir: PathBuf,
    config: SegmentConfig,
    /// Held for the whole of every mutation.
    writing: Mutex<()>,
    index: Mutex<Index>,
    /// The directory lock (real file systems only); released on drop.
    _lock: Option<std::fs::File>,
    /// A write or sync failed: what is on disk past the last good sync is
    /// unknown, so nothing more is written (the node stops on the error
    /// and a restart reads what is there).
    failed: std::sync::atomic::AtomicBool,
    /// Queued message bodies (`bodies/`).
    bodies: Arc<crate::BodyStore>,
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(operation: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::io(operation, e)
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// The `(payload length, crc, index)` of a record header.
fn decode_header(header: &[u8]) -> (u32, u32, u64) {
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let mut index = [0u8; 8];
    index.copy_from_slice(&header[8..16]);
    (word(0), word(4), u64::from_le_bytes(index))
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the record of `(index, payload)` to `out`.
///
/// # Errors
/// A payload over 4 GiB.
fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<u32, StoreError> {
    let len = u32::try_from(payload.len()).map_err(|_| StoreError::io("append", "entry larger than 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(len)
}

fn encode_meta(meta: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = vec![SEGMENT_FORMAT_VERSION];
    for (key, value) in meta {
        // Keys and values are bounded by memory, not by u32, in theory;
        // Raft's metadata is a few hundred bytes.
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
    }
    let sum = crc32fast::hash(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode_meta(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: META_FILE.to_owned(),
    };
    let (body, sum) = bytes
        .split_at_checked(bytes.len().checked_sub(4).ok_or_else(corrupt)?)
        .ok_or_else(corrupt)?;
    let sum: [u8; 4] = sum.try_into().map_err(|_| corrupt())?;
    if crc32fast::hash(body) != u32::from_le_bytes(sum) {
        return Err(corrupt());
    }
    let (&version, mut rest) = body.split_first().ok_or_else(corrupt)?;
    if version != SEGMENT_FORMAT_VERSION {
        return Err(StoreError::UnsupportedFormat {
            key: META_FILE.to_owned(),
            found: version,
            expected: SEGMENT_FORMAT_VERSION,
        });
    }
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, StoreError> {
        let (len, tail) = rest.split_at_checked(8).ok_or_else(corrupt)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().map_err(|_| corrupt())?)).map_err(|_| corrupt())?;
        let (value, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        *rest = tail;
        Ok(value.to_vec())
    };
    let mut meta = BTreeMap::new();
    while !rest.is_empty() {
        let key = String::from_utf8(take(&mut rest)?).map_err(|_| corrupt())?;
        let value = take(&mut rest)?;
        meta.insert(key, value);
    }
    Ok(meta)
}

impl SegmentStore {
    /// Opens (creating if needed) the store in `data_dir` on the real file
    /// system, holding the directory's lock while open. Blocks.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedDataDir`] if `VERSION` names another
    /// layout; [`StoreError::Locked`] if another store keeps the lock for
    /// `config.lock_retry_for`; [`StoreError::Corrupt`] for a damaged
    /// segment that is not a torn tail; [`StoreError::Io`] otherwise.
    pub fn open(data_dir: &Path, config: &SegmentConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(io_err("create data directory"))?;
        let lock = lock_with_retry(data_dir, config.lock_retry_for)?;
        let mut store = Self::open_on(Arc::new(RealFs), data_dir, config)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens (creating if needed) the store in `data_dir` of `vfs`, without
    /// a directory lock (for fake file systems). Blocks.
    ///
    /// # Errors
    /// As [`SegmentStore::open`], but never `Locked`.
    pub fn open_on(vfs: Arc<dyn Vfs>, data_dir: &Path, config: &SegmentConfig) -> Result<Self, StoreError> {
        let log_dir = data_dir.join(LOG_DIR);
        vfs.create_dir_all(&log_dir).map_err(io_err("create log directory"))?;
        // The new directories' names must be durable too, or a power cut
        // could take the whole store with them.
        vfs.sync_dir(data_dir).map_err(io_err("sync data directory"))?;
        if let Some(parent) = data_dir.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            vfs.sync_dir(parent)
                .map_err(io_err("sync the data directory's parent"))?;
        }
        check_or_write_version(&*vfs, data_dir)?;
        let bodies = Arc::new(crate::BodyStore::open(vfs.clone(), data_dir, &config.bodies)?);
        let store = Self {
            vfs,
            dir: data_dir.to_path_buf(),
            log_dir,
            config: config.clone(),
            writing: Mutex::new(()),
            index: Mutex::new(Index::default()),
            _lock: None,
            failed: std::sync::atomic::AtomicBool::new(false),
            bodies,
        };
        store.recover()?;
        Ok(store)
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // Mutations of the index are plain map operations done after the
        // I/O they describe: a panic cannot leave it torn.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writing lock, unless an earlier write failed.
    ///
    /// # Errors
    /// [`StoreError::Io`] once a write or sync has failed.
    fn writable(&self) -> Result<MutexGuard<'_, ()>, StoreError> {
        let guard = self.writing();
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::io(
                "write",
                "an earlier write failed; the store takes no more",
            ));
        }
        Ok(guard)
    }

    /// Reads the metadata and every segment, cutting a torn tail.
    fn recover(&self) -> Result<(), StoreError> {
        let meta = match self.read_whole(&self.dir.join(META_FILE))? {
            Some(bytes) => decode_meta(&bytes)?,
            None => BTreeMap::new(),
        };
        let purged = purged_through(&meta);
        let names = self.vfs.list(&self.log_dir).map_err(io_err("list log directory"))?;
        let mut segments: Vec<(u64, String)> = names
            .into_iter()
            .filter_map(|name| parse_segment_name(&name).map(|first| (first, name)))
            .collect();
        segments.sort_unstable();
        let mut index = Index {
            meta,
            ..Index::default()
        };
        let mut last_seen: Option<u64> = None;
        let count = segments.len();
        for (position, (first, name)) in segments.iter().enumerate() {
            let path = self.log_dir.join(name);
            let file = self.vfs.open(&path, false).map_err(io_err("open log segment"))?;
            let file_len = file.len().map_err(io_err("read log segment"))?;
            let (valid_len, segment_last) =
                scan_segment(&*file, *first, file_len, &mut last_seen, purged, &mut index.entries)?;
            if valid_len < file_len {
                if position + 1 != count {
                    return Err(StoreError::Corrupt {
                        key: format!("log segment {name} at byte {valid_len} (not the last segment)"),
                    });
                }
                tracing::warn!(segment = %name, valid_len, file_len, "cutting a torn tail of the log");
                file.set_len(valid_len).map_err(io_err("cut torn log tail"))?;
                file.sync_data().map_err(io_err("cut torn log tail"))?;
            }
            index.segments.insert(
                *first,
                Segment {
                    file,
                    len: valid_len,
                    last_index: segment_last,
                },
            );
        }
        *self.index() = index;
        Ok(())
    }

    fn read_whole(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        let file = match self.vfs.open(path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open file", e)),
        };
        let len = usize::try_from(file.len().map_err(io_err("read file"))?)
            .map_err(|_| StoreError::io("read file", "larger than memory"))?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, 0).map_err(io_err("read file"))?;
        Ok(Some(bytes))
    }

    /// Writes `parts` to `tmp`, syncs it, renames it over `target` and
    /// syncs the directory.
    fn replace_file(&self, tmp: &str, target: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
        let tmp_path = self.dir.join(tmp);
        let file = self.vfs.open(&tmp_path, true).map_err(io_err("create file"))?;
        file.set_len(0).map_err(io_err("write file"))?;
        let mut offset = 0u64;
        for part in parts {
            file.write_all_at(part, offset).map_err(io_err("write file"))?;
            offset += part.len() as u64;
        }
        file.sync_data().map_err(io_err("sync file"))?;
        drop(file);
        self.vfs
            .rename(&tmp_path, &self.dir.join(target))
            .map_err(io_err("rename file"))?;
        self.vfs.sync_dir(&self.dir).map_err(io_err("sync data directory"))
    }

    /// Stores `meta` (under the writing lock).
    fn write_meta(&self, meta: &BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
        self.replace_file(META_TMP, META_FILE, &[&encode_meta(meta)])
    }

    fn set_purged_through(&self, through: Option<u64>) -> Result<(), StoreError> {
        let mut meta = self.index().meta.clone();
        match through {
            Some(through) => meta.insert(PURGED_KEY.to_owned(), through.to_le_bytes().to_vec()),
            None => meta.remove(PURGED_KEY),
        };
        self.write_meta(&meta)?;
        self.index().meta = meta;
        Ok(())
    }

    /// Removes every segment (under the writing lock).
    fn remove_all_segments(&self) -> Result<(), StoreError> {
        let names: Vec<u64> = self.index().segments.keys().copied().collect();
        self.remove_segments(&names)
    }

    /// Removes the segments named `firsts`, last first, then syncs the
    /// directory, so a power cut in between leaves a prefix of the log.
    fn remove_segments(&self, firsts: &[u64]) -> Result<(), StoreError> {
        if firsts.is_empty() {
            return Ok(());
        }
        for first in firsts.iter().rev() {
            self.vfs
                .remove_file(&self.log_dir.join(segment_name(*first)))
                .map_err(io_err("remove log segment"))?;
            let mut index = self.index();
            index.generation += 1;
            index.segments.remove(first);
            index.entries.retain(|_, loc| loc.segment != *first);
        }
        self.vfs.sync_dir(&self.log_dir).map_err(io_err("sync log directory"))
    }

    /// The segment to append to: the last one, or a new one named `first`
    /// if there is none or the last is full. A new segment's name is made
    /// durable (directory sync) before anything is written to it.
    fn segment_for_append(&self, first: u64) -> Result<(u64, Arc<dyn VfsFile>, u64), StoreError> {
        {
            let index = self.index();
            if let Some((name, segment)) = index.segments.last_key_value() {
                if segment.len < self.config.segment_bytes {
                    return Ok((*name, segment.file.clone(), segment.len));
                }
            }
        }
        let file = self
            .vfs
            .open(&self.log_dir.join(segment_name(first)), true)
            .map_err(io_err("create log segment"))?;
        file.set_len(0).map_err(io_err("create log segment"))?;
        self.vfs.sync_dir(&self.log_dir).map_err(io_err("sync log directory"))?;
        self.index().segments.insert(
            first,
            Segment {
                file: file.clone(),
                len: 0,
                last_index: None,
            },
        );
        Ok((first, file, 0))
    }

    /// The locations (and files) of the entries in `start..end_exclusive`,
    /// with the index's generation at that moment.
    fn locate(&self, start: u64, end_exclusive: u64) -> (u64, Located) {
        let index = self.index();
        let located = index
            .entries
            .range(start..end_exclusive)
            .filter_map(|(i, loc)| index.segments.get(&loc.segment).map(|s| (*i, *loc, s.file.clone())))
            .collect();
        (index.generation, located)
    }

    /// `truncate_from` under the writing lock.
    fn truncate_locked(&self, from: u64) -> Result<(), StoreError> {
        let (cut, later) = {
            let index = self.index();
            let Some((_, cut)) = index.entries.range(from..).next() else {
                return Ok(());
            };
            let later: Vec<u64> = index.segments.range(cut.segment + 1..).map(|(name, _)| *name).collect();
            (*cut, later)
        };
        self.remove_segments(&later)?;
        self.index().generation += 1;
        let file = self
            .index()
            .segments
            .get(&cut.segment)
            .map(|s| s.file.clone())
            .ok_or_else(|| StoreError::io("truncate log", "segment vanished"))?;
        file.set_len(cut.offset).map_err(io_err("truncate log"))?;
        file.sync_data().map_err(io_err("truncate log"))?;
        let mut index = self.index();
        index.generation += 1;
        index.entries.split_off(&from);
        let last_in_segment = index
            .entries
            .iter()
            .rev()
            .find(|(_, loc)| loc.segment == cut.segment)
            .map(|(i, _)| *i);
        if let Some(segment) = index.segments.get_mut(&cut.segment) {
            segment.len = cut.offset;
            segment.last_index = last_in_segment;
        }
        Ok(())
    }
}

/// Reads the records of one segment into `entries` (skipping those at or
/// below `purged`). Returns the length of its valid prefix and the last
/// index in it. `last_seen` carries the previous segment's last index.
fn scan_segment(
    file: &dyn VfsFile,
    segment: u64,
    file_len: u64,
    last_seen: &mut Option<u64>,
    purged: Option<u64>,
    entries: &mut BTreeMap<u64, Location>,
) -> Result<(u64, Option<u64>), StoreError> {
    let mut offset = 0u64;
    let mut segment_last = None;
    let mut header = [0u8; RECORD_HEADER as usize];
    while offset + RECORD_HEADER <= file_len {
        file.read_exact_at(&mut header, offset)
            .map_err(io_err("read log segment"))?;
        let (len, sum, entry_index) = decode_header(&header);
        let end = offset + RECORD_HEADER + u64::from(len);
        if end > file_len {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, offset + RECORD_HEADER)
            .map_err(io_err("read log segment"))?;
        if crc(entry_index, &payload) != sum || last_seen.is_some_and(|last| entry_index <= last) {
            break;
        }
        *last_seen = Some(entry_index);
        segment_last = Some(entry_index);
        if purged.is_none_or(|p| entry_index > p) {
            entries.insert(
                entry_index,
                Location {
                    segment,
                    offset,
                    payload_len: len,
                },
            );
        }
        offset = end;
    }
    Ok((offset, segment_last))
}

/// Reads every located record, in order.
///
/// # Errors
/// As [`read_record`], at the first record that fails.
fn read_located(located: Located) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    located
        .into_iter()
        .map(|(entry_index, loc, file)| Ok((entry_index, read_record(&*file, entry_index, loc)?)))
        .collect()
}

/// Reads the record of `entry_index` at `loc` and checks that it is that
/// record: its header names this index and length, and its CRC matches.
/// Readers take no lock while reading, so a record cut or rewritten by a
/// concurrent truncation shows up here as a mismatch or a short read.
///
/// # Errors
/// [`StoreError::Io`] for a short read or a record that is not the one
/// expected.
fn read_record(file: &dyn VfsFile, entry_index: u64, loc: Location) -> Result<Vec<u8>, StoreError> {
    let mut record = vec![0u8; RECORD_HEADER as usize + loc.payload_len as usize];
    file.read_exact_at(&mut record, loc.offset)
        .map_err(io_err("read log"))?;
    let (header, payload) = record.split_at(RECORD_HEADER as usize);
    let (len, sum, found) = decode_header(header);
    if len != loc.payload_len || found != entry_index || crc(found, payload) != sum {
        return Err(StoreError::io(
            "read log",
            format!("the record at offset {} is not entry {entry_index}", loc.offset),
        ));
    }
    record.drain(..RECORD_HEADER as usize);
    Ok(record)
}

fn purged_through(meta: &BTreeMap<String, Vec<u8>>) -> Option<u64> {
    let bytes: [u8; 8] = meta.get(PURGED_KEY)?.as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn check_or_write_version(vfs: &dyn Vfs, data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(VERSION_FILE);
    match vfs.open(&path, false) {
        Ok(file) => {
            let len = usize::try_from(file.len().map_err(io_err("read VERSION file"))?).unwrap_or(0);
            let mut bytes = vec![0; len.min(64)];
            file.read_exact_at(&mut bytes, 0).map_err(io_err("read VERSION file"))?;
            let found = String::from_utf8_lossy(&bytes).trim().to_owned();
            if found == SEGMENT_FORMAT_VERSION.to_string() {
                Ok(())
            } else {
                Err(StoreError::UnsupportedDataDir {
                    dir: data_dir.to_path_buf(),
                    found,
                    expected: SEGMENT_FORMAT_VERSION,
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = vfs.open(&path, true).map_err(io_err("write VERSION file"))?;
            file.write_all_at(format!("{SEGMENT_FORMAT_VERSION}\n").as_bytes(), 0)
                .map_err(io_err("write VERSION file"))?;
            file.sync_data().map_err(io_err("write VERSION file"))?;
            vfs.sync_dir(data_dir).map_err(io_err("sync data directory"))
        }
        Err(e) => Err(StoreError::io("read VERSION file", e)),
    }
}

fn lock_with_retry(data_dir: &Path, retry_for: Duration) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open LOCK file"))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < retry_for => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    dir: data_dir.to_path_buf(),
                    reason: "another process (or store) holds its LOCK file".to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io("lock data directory", e)),
        }
    }
}

impl LogStore for SegmentStore {
    fn bodies(&self) -> Option<Arc<crate::BodyStore>> {
        Some(self.bodies.clone())
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        // Only a store on the real file system holds the directory lock.
        self._lock.is_some().then(|| self.dir.clone())
    }

    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _writing = self.writable()?;
        let mut sorted: Vec<&(u64, Vec<u8>)> = entries.iter().collect();
        sorted.sort_by_key(|(index, _)| *index);
        sorted.dedup_by_key(|(index, _)| *index);
        let first = sorted[0].0;
        let (purged, last) = {
            let index = self.index();
            (
                purged_through(&index.meta),
                index.entries.last_key_value().map(|(i, _)| *i),
            )
        };
        if purged.is_some_and(|p| first <= p) {
            // Only outside Raft: an entry at or below the purge point. Every
            // record on disk is at or above it, so start the log afresh.
            self.remove_all_segments()?;
            self.set_purged_through(first.checked_sub(1))?;
        } else if last.is_some_and(|l| first <= l) {
            self.truncate_locked(first)?;
        }
        let (segment, file, start) = self.segment_for_append(first)?;
        let mut buffer = Vec::with_capacity(sorted.iter().map(|(_, p)| p.len() + 16).sum());
        let mut locations = Vec::with_capacity(sorted.len());
        for (entry_index, payload) in &sorted {
            let offset = start + buffer.len() as u64;
            let payload_len = encode_record(&mut buffer, *entry_index, payload)?;
            locations.push((
                *entry_index,
                Location {
                    segment,
                    offset,
                    payload_len,
                },
            ));
        }
        let written = file.write_all_at(&buffer, start).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // What the failed write left past `start` is unknown: take no
            // more writes (the node stops on this error), and let the next
            // open read the segment as it is.
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = file.set_len(start);
            return Err(StoreError::io("append", e));
        }
        let mut index = self.index();
        if let Some(seg) = index.segments.get_mut(&segment) {
            seg.len = start + buffer.len() as u64;
            seg.last_index = Some(sorted[sorted.len() - 1].0);
        }
        index.entries.extend(locations);
        Ok(())
    }

    fn range(&self, start: u64, end_exclusive: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if start >= end_exclusive {
            return Ok(Vec::new());
        }
        let (generation, wanted) = self.locate(start, end_exclusive);
        if let Ok(read) = read_located(wanted) {
            if self.index().generation == generation {
                return Ok(read);
            }
        }
        // The log was cut (and perhaps rewritten) while we read, without a
        // lock: what we have may mix two logs, or a record moved under us.
        // Read again with mutations held off; an error now is real.
        let _writing = self.writing();
        let (_, wanted) = self.locate(start, end_exclusive);
        read_located(wanted).inspect_err(|e| tracing::error!(start, end_exclusive, error = %e, "log unreadable"))
    }

    fn first_index(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.index().entries.first_key_value().map(|(i, _)| *i))
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some(last) = self.index().entries.last_key_value().map(|(i, _)| *i) else {
            return Ok(None);
        };
        Ok(self.range(last, last.saturating_add(1))?.pop())
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        let _writing = self.writable()?;
        self.truncate_locked(from)
    }

    fn purge_through(&self, through: u64) -> Result<(), StoreError> {
        let _writing = self.writable()?;
        let current = purged_through(&self.index().meta);
        if current.is_some_and(|p| p >= through) {
            return Ok(());
        }
        // The purge point first: a power cut before the files go leaves
        // records on disk that the next open skips.
        self.set_purged_through(Some(through))?;
        let dead: Vec<u64> = {
            let mut index = self.index();
            let kept = index.entries.split_off(&through.saturating_add(1));
            index.entries = if through == u64::MAX { BTreeMap::new() } else { kept };
            index
                .segments
                .iter()
                .filter(|(_, s)| s.last_index.is_none_or(|last| last <= through))
                .map(|(name, _)| *name)
                .collect()
        };
        self.remove_segments(&dead)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _writing = self.writable()?;
        let mut meta = self.index().meta.clone();
        meta.insert(key.to_owned(), value.to_vec());
        self.write_meta(&meta)?;
        self.index().meta = meta;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.index().meta.get(key).cloned())
    }

    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        let _writing = self.writable()?;
        let mut meta = self.index().meta.clone();
        if meta.remove(key).is_none() {
            return Ok(());
        }
        self.write_meta(&meta)?;
        self.index().meta = meta;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        let segments: u64 = self.index().segments.values().map(|s| s.len).sum();
        let file_len = |name: &str| {
            self.vfs
                .open(&self.dir.join(name), false)
                .and_then(|f| f.len())
                .unwrap_or(0)
        };
        segments + file_len(META_FILE) + file_len(SNAPSHOT_FILE)
    }

    fn put_snapshot(&self, parts: &[&[u8]]) -> Result<(), StoreError> {
        let _writing = self.writable()?;
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&[SEGMENT_FORMAT_VERSION]);
        all.extend_from_slice(parts);
        self.replace_file(SNAPSHOT_TMP, SNAPSHOT_FILE, &all)
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut bytes) = self.read_whole(&self.dir.join(SNAPSHOT_FILE))? else {
            return Ok(None);
        };
        match bytes.first() {
            None => Err(StoreError::Corrupt {
                key: SNAPSHOT_FILE.to_owned(),
            }),
            Some(&SEGMENT_FORMAT_VERSION) => {
                bytes.remove(0);
                Ok(Some(bytes))
            }
            Some(&found) => Err(StoreError::UnsupportedFormat {
                key: SNAPSHOT_FILE.to_owned(),
                found,
                expected: SEGMENT_FORMAT_VERSION,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::PowerCutFs;

    fn small_segments() -> SegmentConfig {
        SegmentConfig {
            segment_bytes: 256,
            ..SegmentConfig::default()
        }
    }

    #[test]
    fn the_store_passes_the_conformance_suite_on_disk() {
        crate::conformance::run_all(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SegmentStore::open(dir.path(), &small_segments()).expect("open");
            (dir, store)
        });
    }

    #[test]
    fn the_store_passes_the_conformance_suite_on_the_power_cut_fs() {
        crate::conformance::run_all(|| {
            let fs = PowerCutFs::new();
            let store =
                SegmentStore::open_on(Arc::new(fs.clone()), Path::new("/data"), &small_segments()).expect("open");
            (fs, store)
        });
    }

    fn payload(index: u64) -> Vec<u8> {
        format!("entry-{index}-")
            .repeat(usize::try_from(index % 7).unwrap_or(0) + 1)
            .into_bytes()
    }

    fn reopen(fs: &PowerCutFs) -> SegmentStore {
        SegmentStore::open_on(Arc::new(fs.clone()), Path::new("/data"), &small_segments()).expect("reopen")
    }

    #[test]
    fn reopening_reads_back_the_log_the_meta_and_the_purge_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SegmentStore::open(dir.path(), &small_segments()).expect("open");
            for index in 1..=40 {
                store.append(&[(index, payload(index))]).expect("append");
            }
            store.purge_through(10).expect("purge");
            store.truncate_from(31).expect("truncate");
            store.put_meta("raft/vote", b"term 3").expect("meta");
        }
        let store = SegmentStore::open(dir.path(), &small_segments()).expect("reopen");
        assert_eq!(store.first_index().expect("first"), Some(11));
        let read = store.range(0, u64::MAX).expect("range");
        assert_eq!(
            read.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (11..=30).collect::<Vec<_>>()
        );
        assert!(read.iter().all(|(i, p)| *p == payload(*i)));
        assert_eq!(store.get_meta("raft/vote").expect("meta"), Some(b"term 3".to_vec()));
        let segments = std::fs::read_dir(dir.path().join(LOG_DIR)).expect("ls").count();
        assert!(segments > 1, "small segments rotate: {segments}");
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SegmentStore::open(dir.path(), &small_segments()).expect("open");
        let config = SegmentConfig {
            lock_retry_for: Duration::from_millis(100),
            ..small_segments()
        };
        assert!(matches!(
            SegmentStore::open(dir.path(), &config),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn a_sled_data_directory_is_not_opened_as_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(VERSION_FILE), "1\n").expect("write");
        assert!(matches!(
            SegmentStore::open(dir.path(), &small_segments()),
            Err(StoreError::UnsupportedDataDir { .. })
        ));
    }

    /// A reader racing truncations and re-appends sees one version of the
    /// log, never a mix (a replication task of a deposed leader reads while
    /// its log is cut). Every round rewrites entries 20..=50 with records of
    /// the same length at the same offsets, tagged with the round, so only
    /// the generation check can tell an old record from a new one. A stress
    /// test: a read straddling a whole truncate + append is rare, and with
    /// the generation check removed this passed 3 runs of 3 (2026-12-03);
    /// it does catch short reads and holes (it failed without the re-read).
    #[test]
    fn reads_racing_truncations_see_one_version_of_the_log() {
        let version = |round: u64, index: u64| format!("r{round:04}-{index:03}").into_bytes();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SegmentStore::open(dir.path(), &small_segments()).expect("open"));
        store
            .append(&(1..=50).map(|i| (i, version(0, i))).collect::<Vec<_>>())
            .expect("append");
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..3000 {
                    let read = store.range(1, 51).expect("a read never fails");
                    for (i, (index, _)) in read.iter().enumerate() {
                        assert_eq!(*index, i as u64 + 1, "a prefix without holes");
                    }
                    let rounds: std::collections::BTreeSet<&[u8]> = read
                        .iter()
                        .filter(|(index, _)| *index >= 20)
                        .map(|(_, bytes)| &bytes[..5])
                        .collect();
                    assert!(rounds.len() <= 1, "entries of two versions in one read: {rounds:?}");
                }
            })
        };
        for round in 1..=300u64 {
            store.truncate_from(20).expect("truncate");
            let new: Vec<(u64, Vec<u8>)> = (20..=50).map(|i| (i, version(round, i))).collect();
            store.append(&new).expect("append");
        }
        reader.join().expect("the reader saw one version each time");
    }

    /// Every write the store acknowledged survives a power cut at any
    /// moment after it, whatever the torn tail looks like; nothing that
    /// was never written appears.
    #[test]
    fn acknowledged_writes_survive_power_cuts() {
        for seed in 0..200u64 {
            let fs = PowerCutFs::new();
            let mut store = reopen(&fs);
            let mut acknowledged: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut vote = None;
            let mut next = 1u64;
            let mut rng = seed;
            for step in 0..60u64 {
                let roll = crate::vfs::next_random(&mut rng) % 10;
                match roll {
                    0..=5 => {
                        let n = 1 + crate::vfs::next_random(&mut rng) % 4;
                        let batch: Vec<(u64, Vec<u8>)> = (next..next + n).map(|i| (i, payload(i))).collect();
                        store.append(&batch).expect("append");
                        acknowledged.extend(batch);
                        next += n;
                    }
                    6 if next > 3 => {
                        let from = next - 1 - crate::vfs::next_random(&mut rng) % 3;
                        store.truncate_from(from).expect("truncate");
                        acknowledged.split_off(&from);
                        next = from;
                    }
                    7 => {
                        let value = format!("vote-{step}").into_bytes();
                        store.put_meta("raft/vote", &value).expect("vote");
                        vote = Some(value);
                    }
                    8 if next > 5 => {
                        let through = next - 5;
                        store.purge_through(through).expect("purge");
                        acknowledged.retain(|i, _| *i > through);
                    }
                    _ => {
                        fs.power_cut(rng);
                        store = reopen(&fs);
                        let read: BTreeMap<u64, Vec<u8>> =
                            store.range(0, u64::MAX).expect("range").into_iter().collect();
                        assert_eq!(read, acknowledged, "seed {seed} step {step}: the log after a power cut");
                        assert_eq!(
                            store.get_meta("raft/vote").expect("meta"),
                            vote,
                            "seed {seed} step {step}"
                        );
                    }
                }
            }
        }
    }
}
