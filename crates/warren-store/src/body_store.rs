//! Message bodies on disk: append-only segment files in `bodies/` of the
//! data directory (issue 9, ADR 0014).
//!
//! The state machine writes the body of every message that reaches a queue
//! here when it applies the publish, and the queues keep a [`BodyRef`]: the
//! segment, the offset of the body's record and its length. Nothing here is
//! replicated: every node writes the bodies it applies to its own store.
//!
//! - A record is `len: u32 LE`, `crc32(body): u32 LE`, then the body.
//! - Appends are buffered and written together ([`BodyStore::write_out`],
//!   once per applied Raft entry, or when the buffer passes
//!   [`WRITE_BUFFER_BYTES`]): one `pwrite` per batch, not one per body.
//! - Appends are not synced one by one: the Raft log holds every body until
//!   a snapshot covers it, and before a snapshot is saved [`BodyStore::sync`]
//!   fdatasyncs every segment written since the last sync (and the
//!   directory, when a segment was created).
//! - Segments are never appended to after a restart: the store starts a new
//!   one, so a torn tail is never written over and every handle stays valid.
//! - A segment goes when no message of the last saved snapshot refers to it
//!   and it holds nothing newer ([`BodyStore::retain`]).
//! - The newest bodies written are kept in memory, up to a configured number
//!   of bytes, so a consumer that keeps up never reads the disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use bytes::Bytes;

use crate::error::StoreError;
use crate::vfs::{Vfs, VfsFile};

/// The directory of the body segments, in the data directory.
pub const BODY_DIR: &str = "bodies";

const HEADER: usize = 8;

/// Bytes of appended records buffered before they are written anyway.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// A body larger than this is written at once, not copied into the buffer.
const BUFFERED_BODY_MAX: usize = 64 * 1024;

/// How the body store sizes its segments and its cache.
#[derive(Clone, Debug)]
pub struct BodyConfig {
    /// A new segment is started once one holds this many bytes.
    pub segment_bytes: u64,
    /// Bytes of the newest bodies kept in memory for delivery.
    pub cache_bytes: u64,
}

impl Default for BodyConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Where a body is: its segment, its record's offset there, its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BodyRef {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl BodyRef {
    fn key(&self) -> u64 {
        (u64::from(self.segment) << 32) | u64::from(self.offset)
    }
}

struct Writer {
    segment: u32,
    file: Arc<dyn VfsFile>,
    /// The segment's length, the buffered records included.
    len: u64,
    /// Records appended and not yet written: they end the segment, from
    /// `len - buffer.len()`.
    buffer: Vec<u8>,
    /// Segments written since the last sync.
    unsynced: BTreeSet<u32>,
    /// A segment was created since the last sync of the directory.
    dir_dirty: bool,
    /// A write or sync failed: nothing more is written.
    failed: bool,
}

/// The newest bodies written, in write order (so by key).
#[derive(Default)]
struct Cache {
    entries: VecDeque<(u64, Bytes)>,
    /// What the entries cost in memory ([`cache_cost`]).
    bytes: u64,
}

/// Memory an entry of the cache holds besides its body's bytes: its slot
/// in the queue (a key and a `Bytes`, 40 bytes), the body's own
/// allocation and `Bytes`' shared header, with the allocator's overhead.
/// Counting body bytes alone let a stream of 16-byte messages fill the
/// 32 MiB budget with two million entries: the node's RSS rose by ~200 MiB
/// and stayed there (heaptrack: 42 MB of queue and 32 MB of bodies held).
const CACHE_ENTRY_OVERHEAD: u64 = 96;

/// What `body` costs the cache.
fn cache_cost(body: &Bytes) -> u64 {
    body.len() as u64 + CACHE_ENTRY_OVERHEAD
}

/// One node's message bodies. Blocking; safe to share between threads.
pub struct BodyStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    config: BodyConfig,
    writer: Mutex<Writer>,
    /// The segment being written, as `writer.segment`, set after the old
    /// one's buffer was written: a record of an older segment is on file,
    /// and a read of it needs no writer lock.
    current: std::sync::atomic::AtomicU32,
    files: RwLock<BTreeMap<u32, Arc<dyn VfsFile>>>,
    cache: Mutex<Cache>,
    /// Bytes the cache may hold (the configured size, or less).
    cache_budget: std::sync::atomic::AtomicU64,
    /// Held (shared) by whoever reads bodies an older snapshot refers to;
    /// [`BodyStore::retain`] takes it exclusively.
    gc: RwLock<()>,
}

impl Drop for BodyStore {
    /// Writes what is buffered (best effort: nothing relies on it, the
    /// Raft log holds every body not yet synced).
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !writer.failed {
            let _ = Self::write_buffer(writer);
        }
    }
}

impl std::fmt::Debug for BodyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(operation: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::io(operation, e)
}

fn segment_name(segment: u32) -> String {
    format!("{segment:010}.body")
}

fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_suffix(".body")?.parse().ok()
}

impl BodyStore {
    /// Opens the body store in `data_dir/bodies` of `vfs`, creating it if
    /// needed, and starts a new segment. Blocks.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory or a segment cannot be opened.
    pub fn open(vfs: Arc<dyn Vfs>, data_dir: &Path, config: &BodyConfig) -> Result<Self, StoreError> {
        let dir = data_dir.join(BODY_DIR);
        vfs.create_dir_all(&dir).map_err(io_err("create body directory"))?;
        vfs.sync_dir(data_dir).map_err(io_err("sync data directory"))?;
        let mut files = BTreeMap::new();
        for name in vfs.list(&dir).map_err(io_err("list body directory"))? {
            if let Some(segment) = parse_segment_name(&name) {
                let file = vfs.open(&dir.join(&name), false).map_err(io_err("open body segment"))?;
                files.insert(segment, file);
            }
        }
        let segment = files.keys().next_back().map_or(0, |last| last + 1);
        let file = vfs
            .open(&dir.join(segment_name(segment)), true)
            .map_err(io_err("create body segment"))?;
        files.insert(segment, file.clone());
        Ok(Self {
            vfs,
            dir,
            config: config.clone(),
            writer: Mutex::new(Writer {
                segment,
                file,
                len: 0,
                buffer: Vec::new(),
                unsynced: BTreeSet::new(),
                dir_dirty: true,
                failed: false,
            }),
            current: std::sync::atomic::AtomicU32::new(segment),
            files: RwLock::new(files),
            cache: Mutex::new(Cache::default()),
            cache_budget: std::sync::atomic::AtomicU64::new(config.cache_bytes),
            gc: RwLock::new(()),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // Every field is assigned after the I/O it describes.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, segment: u32) -> Option<Arc<dyn VfsFile>> {
        self.files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&segment)
            .cloned()
    }

    /// Writes the buffered records to their segment.
    fn write_buffer(writer: &mut Writer) -> Result<(), StoreError> {
        if writer.buffer.is_empty() {
            return Ok(());
        }
        let at = writer.len - writer.buffer.len() as u64;
        if let Err(e) = writer.file.write_all_at(&writer.buffer, at) {
            writer.failed = true;
            return Err(StoreError::io("append body", e));
        }
        writer.buffer.clear();
        Ok(())
    }

    /// Writes every body appended so far to its segment (not synced: see
    /// [`BodyStore::sync`]).
    ///
    /// # Errors
    /// [`StoreError::Io`] if the write fails (then every later append fails
    /// too).
    pub fn write_out(&self) -> Result<(), StoreError> {
        let mut writer = self.writer();
        if writer.failed {
            return Err(StoreError::io(
                "append body",
                "an earlier write failed; the store takes no more",
            ));
        }
        Self::write_buffer(&mut writer)
    }

    /// Starts segment `writer.segment + 1`, the buffered records written
    /// to the old one first.
    fn start_segment(&self, writer: &mut Writer) -> Result<(), StoreError> {
        Self::write_buffer(writer)?;
        let segment = writer.segment + 1;
        let file = self
            .vfs
            .open(&self.dir.join(segment_name(segment)), true)
            .map_err(io_err("create body segment"))?;
        self.files
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(segment, file.clone());
        writer.segment = segment;
        self.current.store(segment, std::sync::atomic::Ordering::Release);
        writer.file = file;
        writer.len = 0;
        writer.dir_dirty = true;
        Ok(())
    }

    /// Appends `body`; it is written by the next [`BodyStore::write_out`]
    /// (or sooner) and durable after the next [`BodyStore::sync`]. It can
    /// be read at once.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the write fails (then every later append fails
    /// too), or the body is larger than a record can say.
    pub fn append(&self, body: &Bytes) -> Result<BodyRef, StoreError> {
        let len = u32::try_from(body.len()).map_err(|_| StoreError::io("append body", "body over 4 GiB"))?;
        let record = HEADER as u64 + u64::from(len);
        let mut writer = self.writer();
        if writer.failed {
            return Err(StoreError::io(
                "append body",
                "an earlier write failed; the store takes no more",
            ));
        }
        if writer.len > 0 && writer.len + record > self.config.segment_bytes {
            if let Err(e) = self.start_segment(&mut writer) {
                writer.failed = true;
                return Err(e);
            }
        }
        let offset = u32::try_from(writer.len).map_err(|_| StoreError::io("append body", "segment over 4 GiB"))?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
        if body.len() <= BUFFERED_BODY_MAX {
            writer.buffer.extend_from_slice(&header);
            writer.buffer.extend_from_slice(body);
            writer.len += record;
            if writer.buffer.len() >= WRITE_BUFFER_BYTES {
                Self::write_buffer(&mut writer)?;
            }
        } else {
            Self::write_buffer(&mut writer)?;
            let written = writer
                .file
                .write_all_at(&header, writer.len)
                .and_then(|()| writer.file.write_all_at(body, writer.len + HEADER as u64));
            if let Err(e) = written {
                writer.failed = true;
                return Err(StoreError::io("append body", e));
            }
            writer.len += record;
        }
        let segment = writer.segment;
        writer.unsynced.insert(segment);
        drop(writer);
        let at = BodyRef { segment, offset, len };
        self.remember(at.key(), body);
        Ok(at)
    }

    fn remember(&self, key: u64, body: &Bytes) {
        let budget = self.cache_budget.load(std::sync::atomic::Ordering::Relaxed);
        let size = cache_cost(body);
        if size > budget {
            return;
        }
        let mut cache = self.cache();
        while cache.bytes + size > budget {
            match cache.entries.pop_front() {
                Some((_, old)) => cache.bytes -= cache_cost(&old),
                None => break,
            }
        }
        cache.bytes += size;
        cache.entries.push_back((key, body.clone()));
    }

    /// The body at `at`: from memory if it is among the newest written,
    /// else read from its segment and checked against its checksum.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the segment is gone or unreadable;
    /// [`StoreError::Corrupt`] if the record does not match.
    pub fn read(&self, at: &BodyRef) -> Result<Bytes, StoreError> {
        {
            let cache = self.cache();
            let key = at.key();
            let found = cache.entries.partition_point(|(k, _)| *k < key);
            if let Some((k, body)) = cache.entries.get(found) {
                if *k == key && body.len() as u64 == u64::from(at.len) {
                    return Ok(body.clone());
                }
            }
        }
        let mut record = vec![0u8; HEADER + at.len as usize];
        let older = at.segment < self.current.load(std::sync::atomic::Ordering::Acquire);
        let buffered = !older && {
            // Under the writer's lock a record is either still buffered or
            // already written.
            let writer = self.writer();
            let buffer_at = writer.len - writer.buffer.len() as u64;
            let offset = u64::from(at.offset);
            if at.segment == writer.segment && offset >= buffer_at {
                let from = usize::try_from(offset - buffer_at).unwrap_or(usize::MAX);
                let record_in_buffer = writer.buffer.get(from..from.saturating_add(record.len()));
                let Some(bytes) = record_in_buffer else {
                    return Err(StoreError::Corrupt {
                        key: format!("body {}:{}", at.segment, at.offset),
                    });
                };
                record.copy_from_slice(bytes);
                true
            } else {
                false
            }
        };
        if !buffered {
            let file = self
                .file(at.segment)
                .ok_or_else(|| StoreError::io("read body", format!("segment {} is gone", at.segment)))?;
            file.read_exact_at(&mut record, u64::from(at.offset))
                .map_err(io_err("read body"))?;
        }
        let corrupt = || StoreError::Corrupt {
            key: format!("body {}:{}", at.segment, at.offset),
        };
        let len = u32::from_le_bytes(record[..4].try_into().map_err(|_| corrupt())?);
        let crc = u32::from_le_bytes(record[4..HEADER].try_into().map_err(|_| corrupt())?);
        let body = Bytes::from(record).slice(HEADER..);
        if len != at.len || crc32fast::hash(&body) != crc {
            return Err(corrupt());
        }
        Ok(body)
    }

    /// Ends the current segment if it holds anything and returns the
    /// newest segment that does: every body appended before the call is in
    /// a segment up to it, every later one in a newer segment.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the new segment cannot be created.
    pub fn seal(&self) -> Result<u32, StoreError> {
        let mut writer = self.writer();
        if writer.len == 0 {
            return Ok(writer.segment.saturating_sub(1));
        }
        let sealed = writer.segment;
        if let Err(e) = self.start_segment(&mut writer) {
            writer.failed = true;
            return Err(e);
        }
        Ok(sealed)
    }

    /// fdatasyncs every segment written since the last sync, and the
    /// directory if a segment was created: every body appended before the
    /// call is then on stable storage.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a sync fails (the store then takes no more
    /// writes).
    pub fn sync(&self) -> Result<(), StoreError> {
        let (segments, dir_dirty) = {
            let mut writer = self.writer();
            if writer.failed {
                return Err(StoreError::io("sync bodies", "an earlier write failed"));
            }
            Self::write_buffer(&mut writer)?;
            let dir_dirty = std::mem::take(&mut writer.dir_dirty);
            (std::mem::take(&mut writer.unsynced), dir_dirty)
        };
        let result = (|| {
            for segment in &segments {
                if let Some(file) = self.file(*segment) {
                    file.sync_data().map_err(io_err("sync body segment"))?;
                }
            }
            if dir_dirty {
                self.vfs.sync_dir(&self.dir).map_err(io_err("sync body directory"))?;
            }
            Ok(())
        })();
        if result.is_err() {
            self.writer().failed = true;
        }
        result
    }

    /// Keeps reads of bodies that an older snapshot refers to safe from
    /// [`BodyStore::retain`] while the guard lives.
    pub fn pin(&self) -> RwLockReadGuard<'_, ()> {
        self.gc.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes every segment up to `through` that is not in `live`, but
    /// never the one being written. Returns how many went.
    ///
    /// # Errors
    /// [`StoreError::Io`] if a segment cannot be deleted.
    pub fn retain(&self, through: u32, live: &BTreeSet<u32>) -> Result<usize, StoreError> {
        let _exclusive = self.gc.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.writer().segment;
        let doomed: Vec<u32> = self
            .files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .filter(|s| *s <= through && *s != current && !live.contains(s))
            .collect();
        for segment in &doomed {
            self.files
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(segment);
            self.vfs
                .remove_file(&self.dir.join(segment_name(*segment)))
                .map_err(io_err("delete body segment"))?;
        }
        if !doomed.is_empty() {
            let doomed: BTreeSet<u32> = doomed.iter().copied().collect();
            let mut cache = self.cache();
            cache
                .entries
                .retain(|(key, _)| !doomed.contains(&u32::try_from(key >> 32).unwrap_or(u32::MAX)));
            cache.bytes = cache.entries.iter().map(|(_, body)| cache_cost(body)).sum();
        }
        Ok(doomed.len())
    }

    /// Segment files and their bytes on disk.
    pub fn disk_usage(&self) -> (usize, u64) {
        let files: Vec<Arc<dyn VfsFile>> = self
            .files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let bytes = files.iter().map(|f| f.len().unwrap_or(0)).sum();
        (files.len(), bytes)
    }

    /// Keeps the cache to at most `bytes` from now on (never more than
    /// configured).
    pub fn limit_cache(&self, bytes: u64) {
        let budget = bytes.min(self.config.cache_bytes);
        self.cache_budget.store(budget, std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.cache();
        while cache.bytes > budget {
            match cache.entries.pop_front() {
                Some((_, old)) => cache.bytes -= cache_cost(&old),
                None => break,
            }
        }
    }

    /// Memory the cache holds: its bodies and each entry's overhead.
    pub fn cached_bytes(&self) -> u64 {
        self.cache().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{PowerCutFs, RealFs};

    fn config() -> BodyConfig {
        BodyConfig {
            segment_bytes: 64,
            cache_bytes: 16,
        }
    }

    /// The cache's budget counts each entry's overhead, not only its body:
    /// tiny bodies must not fill it with millions of entries.
    #[test]
    fn the_cache_counts_what_an_entry_costs_not_only_its_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let per_entry = 16 + CACHE_ENTRY_OVERHEAD;
        let config = BodyConfig {
            segment_bytes: 1 << 20,
            cache_bytes: 10 * per_entry,
        };
        let store = BodyStore::open(Arc::new(RealFs), dir.path(), &config).expect("open");
        for i in 0..100u8 {
            store.append(&Bytes::from(vec![i; 16])).expect("append");
        }
        assert_eq!(store.cache().entries.len(), 10, "ten entries fit the budget");
        assert_eq!(store.cached_bytes(), 10 * per_entry);
        store.limit_cache(5 * per_entry);
        assert_eq!(store.cache().entries.len(), 5);
        assert_eq!(store.cached_bytes(), 5 * per_entry);
    }

    #[test]
    fn bodies_read_back_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BodyStore::open(Arc::new(RealFs), dir.path(), &config()).expect("open");
        let bodies: Vec<Bytes> = ["", "a", "zwölf ✓", &"x".repeat(100), "tail"]
            .iter()
            .map(|s| Bytes::from(s.to_string()))
            .collect();
        let refs: Vec<BodyRef> = bodies.iter().map(|b| store.append(b).expect("append")).collect();
        assert!(refs.iter().any(|r| r.segment > 0), "small segments roll over");
        for (body, at) in bodies.iter().zip(&refs) {
            assert_eq!(&store.read(at).expect("read"), body);
        }
        drop(store);
        let reopened = BodyStore::open(Arc::new(RealFs), dir.path(), &config()).expect("reopen");
        for (body, at) in bodies.iter().zip(&refs) {
            assert_eq!(&reopened.read(at).expect("read after reopen"), body, "from disk");
        }
        let next = reopened.append(&Bytes::from_static(b"new")).expect("append");
        assert!(
            next.segment > refs.iter().map(|r| r.segment).max().unwrap_or(0),
            "a new segment"
        );
    }

    #[test]
    fn buffered_bodies_read_back_before_and_after_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BodyConfig {
            segment_bytes: 4096,
            cache_bytes: 0,
        };
        let store = BodyStore::open(Arc::new(RealFs), dir.path(), &config).expect("open");
        let bodies: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; usize::from(i) * 7])).collect();
        let refs: Vec<BodyRef> = bodies.iter().map(|b| store.append(b).expect("append")).collect();
        assert!(refs.iter().any(|r| r.segment > refs[0].segment), "segments roll over");
        let segment_len = |segment: u32| {
            std::fs::metadata(dir.path().join(BODY_DIR).join(segment_name(segment)))
                .expect("segment")
                .len()
        };
        let last = refs[refs.len() - 1];
        assert!(
            segment_len(last.segment) <= u64::from(last.offset),
            "the newest record is still buffered"
        );
        for (body, at) in bodies.iter().zip(&refs) {
            assert_eq!(&store.read(at).expect("read, buffered or written"), body);
        }
        store.write_out().expect("write");
        assert_eq!(
            segment_len(last.segment),
            u64::from(last.offset) + HEADER as u64 + u64::from(last.len),
            "written"
        );
        for (body, at) in bodies.iter().zip(&refs) {
            assert_eq!(&store.read(at).expect("read from disk"), body);
        }
        let large = Bytes::from(vec![7u8; BUFFERED_BODY_MAX + 1]);
        let small = store.append(&Bytes::from_static(b"before")).expect("append");
        let at = store.append(&large).expect("append large");
        assert_eq!(
            store.read(&small).expect("written before the large one").as_ref(),
            b"before"
        );
        assert_eq!(store.read(&at).expect("large"), large);
    }

    #[test]
    fn a_damaged_record_is_refused_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BodyConfig {
            segment_bytes: 1 << 20,
            cache_bytes: 0,
        };
        let store = BodyStore::open(Arc::new(RealFs), dir.path(), &config).expect("open");
        let at = store.append(&Bytes::from_static(b"hello")).expect("append");
        store.write_out().expect("write");
        let path = dir.path().join(BODY_DIR).join(segment_name(at.segment));
        let mut bytes = std::fs::read(&path).expect("read segment");
        bytes[HEADER + 1] ^= 0xff;
        std::fs::write(&path, bytes).expect("damage");
        assert!(matches!(store.read(&at), Err(StoreError::Corrupt { .. })));
        let wrong_len = BodyRef { len: 4, ..at };
        assert!(store.read(&wrong_len).is_err());
    }

    #[test]
    fn retain_deletes_dead_sealed_segments_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BodyStore::open(Arc::new(RealFs), dir.path(), &config()).expect("open");
        let a = store.append(&Bytes::from_static(b"a")).expect("append");
        let sealed = store.seal().expect("seal");
        assert_eq!(sealed, a.segment);
        let b = store.append(&Bytes::from_static(b"b")).expect("append");
        let sealed_again = store.seal().expect("seal");
        assert_eq!(sealed_again, b.segment);
        assert_eq!(
            store.seal().expect("nothing new"),
            sealed_again,
            "an empty segment is not sealed"
        );
        let c = store.append(&Bytes::from_static(b"c")).expect("append");
        let removed = store
            .retain(sealed_again, &BTreeSet::from([b.segment]))
            .expect("retain");
        assert_eq!(removed, 1, "only a's segment");
        assert!(store.read(&a).is_err(), "gone");
        assert_eq!(store.read(&b).expect("kept").as_ref(), b"b");
        assert_eq!(store.read(&c).expect("newer").as_ref(), b"c");
        store.retain(u32::MAX, &BTreeSet::new()).expect("retain all");
        assert_eq!(store.read(&c).expect("the segment being written stays").as_ref(), b"c");
    }

    #[test]
    fn synced_bodies_survive_a_power_cut_and_unsynced_ones_may_not() {
        let fs = Arc::new(PowerCutFs::new());
        let data = Path::new("/data");
        let config = BodyConfig {
            segment_bytes: 1 << 20,
            cache_bytes: 0,
        };
        let store = BodyStore::open(fs.clone(), data, &config).expect("open");
        let kept = store.append(&Bytes::from_static(b"synced")).expect("append");
        store.sync().expect("sync");
        let lost = store.append(&Bytes::from_static(b"not synced")).expect("append");
        drop(store);
        fs.power_cut(7);
        let store = BodyStore::open(fs, data, &config).expect("reopen");
        assert_eq!(store.read(&kept).expect("synced").as_ref(), b"synced");
        assert!(store.read(&lost).is_err(), "an unsynced write is discarded at the cut");
    }
}
