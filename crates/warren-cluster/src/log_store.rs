//! openraft's log storage (`RaftLogStorage`) on a [`LogStore`].
//!
//! Writes go through one dedicated writer thread, in the order openraft
//! issues them (openraft requires write I/O to be serialized). An append
//! returns as soon as its entries are queued and readable; the writer
//! coalesces every append waiting at that moment into one store write with
//! one flush, then reports them flushed to openraft — group commit below
//! the proposer's batching. Until then, readers see the queued entries
//! through the shared `pending` map.
//!
//! Flushed entries stay in that map too, up to [`RECENT_BYTES`] of them
//! (oldest out first): the state machine applies an entry right after it
//! is flushed, and followers are sent the newest entries, so both read
//! them from memory instead of reading the disk back, on a blocking
//! thread, and decoding them again (issue 11, item 4).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use tokio::sync::oneshot;
use warren_store::{LogStore, StoreError};

use crate::codec::{decode, encode};
use crate::type_config::TypeConfig;

const VOTE_KEY: &str = "raft/vote";
const PURGED_KEY: &str = "raft/last_purged";

/// Encoded bytes of flushed entries kept in memory for readers.
const RECENT_BYTES: u64 = 8 * 1024 * 1024;

type Pending = Arc<Mutex<Entries>>;

/// The entries readers find in memory: every one queued for the writer,
/// and the newest flushed ones.
struct Entries {
    /// Shared so that a reader copies them outside the lock.
    map: BTreeMap<u64, Arc<Entry<TypeConfig>>>,
    /// The flushed entries in `map`, oldest first, with their encoded sizes.
    flushed: std::collections::VecDeque<(LogId<u64>, u64)>,
    flushed_bytes: u64,
    /// [`RECENT_BYTES`], but for tests.
    budget: u64,
}

impl Default for Entries {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            flushed: std::collections::VecDeque::new(),
            flushed_bytes: 0,
            budget: RECENT_BYTES,
        }
    }
}

impl Entries {
    /// Marks `log_id` flushed, then lets the oldest flushed entries go
    /// while they hold more than [`RECENT_BYTES`].
    fn flushed(&mut self, log_id: LogId<u64>, bytes: u64) {
        if self.map.get(&log_id.index).map(|e| e.log_id) != Some(log_id) {
            return;
        }
        self.flushed.push_back((log_id, bytes));
        self.flushed_bytes += bytes;
        while self.flushed_bytes > self.budget {
            let Some((old, old_bytes)) = self.flushed.pop_front() else {
                break;
            };
            self.flushed_bytes -= old_bytes;
            if self.map.get(&old.index).map(|e| e.log_id) == Some(old) {
                self.map.remove(&old.index);
            }
        }
    }

    /// Forgets every entry from `from` on (a truncation).
    fn truncate(&mut self, from: u64) {
        self.map.split_off(&from);
        self.forget_flushed(|index| index >= from);
    }

    /// Forgets every entry up to `through` (a purge).
    fn purge(&mut self, through: u64) {
        self.map = self.map.split_off(&through.saturating_add(1));
        self.forget_flushed(|index| index <= through);
    }

    fn forget_flushed(&mut self, gone: impl Fn(u64) -> bool) {
        self.flushed.retain(|(log_id, _)| !gone(log_id.index));
        self.flushed_bytes = self.flushed.iter().map(|(_, bytes)| bytes).sum();
    }
}

fn lock_pending(pending: &Pending) -> MutexGuard<'_, Entries> {
    // Every mutation leaves the map and the flushed list consistent before
    // anything that could panic.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

enum WriteOp {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        /// Each entry's id and encoded size.
        log_ids: Vec<(LogId<u64>, u64)>,
        flushed: LogFlushed<TypeConfig>,
        /// Only settlements (acks, nacks, rejects): no client waits for
        /// their commit, so their flush may wait for company.
        patient: bool,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Purge {
        through: LogId<u64>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    PutMeta {
        key: &'static str,
        value: Vec<u8>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The Raft log of one node.
pub struct RaftLogStore {
    store: Arc<dyn LogStore>,
    pending: Pending,
    /// Bytes of encoded entries appended since this node started (read by
    /// the size-based snapshot trigger, `compaction.rs`).
    appended_bytes: Arc<AtomicU64>,
    writer: std_mpsc::Sender<WriteOp>,
    last_log_id: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    /// Where the commit index goes (not persisted: openraft re-learns it
    /// from the leader after a restart).
    counters: Arc<crate::raft_stats::RaftCounters>,
}

/// Reads the log for openraft's replication tasks.
#[derive(Clone)]
pub struct RaftLogReaderHandle {
    store: Arc<dyn LogStore>,
    pending: Pending,
}

impl RaftLogStore {
    /// Opens the log kept in `store` and starts its writer thread. Reads the
    /// store on a blocking thread.
    ///
    /// # Errors
    /// The store cannot be read or holds entries this build cannot decode.
    pub async fn open(store: Arc<dyn LogStore>) -> Result<Self, StorageError<u64>> {
        let reading = store.clone();
        let (last_log_id, last_purged) = run_blocking(move || {
            let last = match reading.last_entry().map_err(|e| StorageIOError::read_logs(&e))? {
                Some((_, bytes)) => {
                    let entry: Entry<TypeConfig> = decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                    Some(*entry.get_log_id())
                }
                None => None,
            };
            let purged = match reading
                .get_meta(PURGED_KEY)
                .map_err(|e| StorageIOError::read_logs(&e))?
            {
                Some(bytes) => Some(decode::<LogId<u64>>(&bytes).map_err(|e| StorageIOError::read_logs(&e))?),
                None => None,
            };
            Ok::<_, StorageError<u64>>((last, purged))
        })
        .await??;

        let (writer, ops) = std_mpsc::channel();
        let pending = Pending::default();
        let thread_store = store.clone();
        let thread_pending = pending.clone();
        std::thread::Builder::new()
            .name("warren-log-writer".to_owned())
            .spawn(move || run_writer(thread_store, thread_pending, ops))
            .map_err(|e| StorageIOError::write_logs(&e))?;

        Ok(Self {
            store,
            pending,
            appended_bytes: Arc::new(AtomicU64::new(0)),
            writer,
            last_log_id: last_log_id.or(last_purged),
            last_purged,
            counters: Arc::default(),
        })
    }

    /// Reports the commit index to `counters` from now on.
    pub(crate) fn count_into(&mut self, counters: Arc<crate::raft_stats::RaftCounters>) {
        self.counters = counters;
    }

    /// The count of bytes appended to this log since it was opened.
    pub(crate) fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    fn reader(&self) -> RaftLogReaderHandle {
        RaftLogReaderHandle {
            store: self.store.clone(),
            pending: self.pending.clone(),
        }
    }

    async fn write_and_wait(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> WriteOp,
    ) -> Result<(), StoreError> {
        let (done, finished) = oneshot::channel();
        self.writer.send(op(done)).map_err(|_| StoreError::Io {
            operation: "log write",
            reason: "writer thread stopped".to_owned(),
        })?;
        finished.await.map_err(|_| StoreError::Io {
            operation: "log write",
            reason: "writer thread stopped".to_owned(),
        })?
    }
}

/// An append written and not yet reported: its entries' ids and encoded
/// sizes, and openraft's callback.
type Appended = (Vec<(LogId<u64>, u64)>, LogFlushed<TypeConfig>);

/// The writer thread: applies write operations in arrival order,
/// coalescing consecutive appends into one store write and flush.
fn run_writer(store: Arc<dyn LogStore>, pending: Pending, ops: std_mpsc::Receiver<WriteOp>) {
    let mut queued: Vec<WriteOp> = Vec::new();
    while let Ok(first) = ops.recv() {
        queued.push(first);
        queued.extend(ops.try_iter());
        gather_patient(&ops, &mut queued);
        let mut appends: Vec<Appended> = Vec::new();
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        for op in queued.drain(..) {
            match op {
                WriteOp::Append {
                    entries,
                    log_ids,
                    flushed,
                    patient: _,
                } => {
                    batch.extend(entries);
                    appends.push((log_ids, flushed));
                }
                other => {
                    flush_appends(&*store, &pending, &mut batch, &mut appends);
                    run_sync_op(&*store, other);
                }
            }
        }
        flush_appends(&*store, &pending, &mut batch, &mut appends);
    }
    tracing::debug!("log writer thread stopped");
}

/// An entry of acks, nacks and rejects only (not an empty one).
fn settlements_only(entry: &Entry<TypeConfig>) -> bool {
    match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => {
            !proposal.batch.requests.is_empty()
                && proposal.batch.requests.iter().all(|request| {
                    matches!(
                        request.command,
                        warren_core::Command::Ack { .. }
                            | warren_core::Command::Nack { .. }
                            | warren_core::Command::Reject { .. }
                    )
                })
        }
        _ => false,
    }
}

/// How long appends of settlements only wait for more before their flush.
const PATIENCE: std::time::Duration = std::time::Duration::from_micros(500);

/// Settlement entries gathered into one flush at most.
const PATIENT_ENTRIES: usize = 64;

/// The entries of an append of settlements only; `None` for any other
/// operation.
fn patient_entries(op: &WriteOp) -> Option<usize> {
    match op {
        WriteOp::Append {
            entries, patient: true, ..
        } => Some(entries.len()),
        _ => None,
    }
}

/// While everything queued is appends of settlements only, waits up to
/// [`PATIENCE`] for more operations (until [`PATIENT_ENTRIES`] entries or
/// one that is not patient): a consumer draining a backlog acks one message
/// at a time, and one flush per handful of acks kept the disk busy with
/// rewrites of the log's last page (docs/benchmarks.md, "the drain").
fn gather_patient(ops: &std_mpsc::Receiver<WriteOp>, queued: &mut Vec<WriteOp>) {
    let Some(mut entries) = queued.iter().map(patient_entries).sum::<Option<usize>>() else {
        return;
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while entries < PATIENT_ENTRIES {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(op) = ops.recv_timeout(left) else {
            return;
        };
        let more = patient_entries(&op);
        queued.push(op);
        match more {
            Some(n) => entries += n,
            None => return,
        }
    }
}

fn flush_appends(
    store: &dyn LogStore,
    pending: &Pending,
    batch: &mut Vec<(u64, Vec<u8>)>,
    appends: &mut Vec<Appended>,
) {
    if appends.is_empty() {
        return;
    }
    let result = store.append(batch);
    batch.clear();
    match result {
        Ok(()) => {
            let mut pending = lock_pending(pending);
            for (log_ids, _) in appends.iter() {
                for (log_id, bytes) in log_ids {
                    pending.flushed(*log_id, *bytes);
                }
            }
            drop(pending);
            for (_, flushed) in appends.drain(..) {
                flushed.log_io_completed(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "log append failed");
            for (_, flushed) in appends.drain(..) {
                flushed.log_io_completed(Err(std::io::Error::other(e.to_string())));
            }
        }
    }
}

fn run_sync_op(store: &dyn LogStore, op: WriteOp) {
    match op {
        WriteOp::Append { .. } => {}
        WriteOp::Truncate { from, done } => {
            let _ = done.send(store.truncate_from(from));
        }
        WriteOp::Purge { through, done } => {
            // Record the purge point first: a crash between the two leaves
            // extra entries behind it, which openraft ignores.
            let result = encode(&through)
                .map_err(|e| StoreError::Io {
                    operation: "encode purge point",
                    reason: e.to_string(),
                })
                .and_then(|bytes| store.put_meta(PURGED_KEY, &bytes))
                .and_then(|()| store.purge_through(through.index));
            let _ = done.send(result);
        }
        WriteOp::PutMeta { key, value, done } => {
            let _ = done.send(store.put_meta(key, &value));
        }
    }
}

/// Runs a blocking closure off the runtime's workers.
pub(crate) async fn run_blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, StorageError<u64>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageIOError::read(&e).into())
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReaderHandle {
    async fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Copy the queued entries *before* reading the store: an entry that
        // leaves `pending` has been written first, so it is in one or the other.
        let shared: Vec<(u64, Arc<Entry<TypeConfig>>)> = lock_pending(&self.pending)
            .map
            .range(start..end)
            .map(|(i, e)| (*i, Arc::clone(e)))
            .collect();
        let queued: BTreeMap<u64, Entry<TypeConfig>> = shared.into_iter().map(|(i, e)| (i, (*e).clone())).collect();
        // All of a bounded range in memory (the keys are distinct and in
        // the range, so as many as the range is long is all of it): no
        // disk read.
        if end != u64::MAX && queued.len() as u64 == end - start {
            return Ok(queued.into_values().collect());
        }
        let store = self.store.clone();
        let stored = run_blocking(move || store.range(start, end))
            .await?
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let mut entries: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        for (index, bytes) in stored {
            let entry: Entry<TypeConfig> = decode(&bytes).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.insert(index, entry);
        }
        entries.extend(queued);
        // Raft needs a contiguous run from `start`.
        let mut contiguous = Vec::with_capacity(entries.len());
        let mut expected = None;
        for (index, entry) in entries {
            if expected.is_some_and(|next| next != index) {
                break;
            }
            expected = Some(index + 1);
            contiguous.push(entry);
        }
        Ok(contiguous)
    }
}

impl RaftLogReader<TypeConfig> for RaftLogReaderHandle {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (start, end) = range_to_bounds(&range);
        self.read_range(start, end).await
    }
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let (start, end) = range_to_bounds(&range);
        self.reader().read_range(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = RaftLogReaderHandle;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let value = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.write_and_wait(|done| WriteOp::PutMeta {
            key: VOTE_KEY,
            value,
            done,
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        if let Some(committed) = committed {
            self.counters.committed(committed.index);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let store = self.store.clone();
        let stored = run_blocking(move || store.get_meta(VOTE_KEY))
            .await?
            .map_err(|e| StorageIOError::read_vote(&e))?;
        match stored {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| StorageIOError::read_vote(&e))?)),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = encode(entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let bytes: usize = encoded.iter().map(|(_, bytes)| bytes.len()).sum();
        self.appended_bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
        let patient = entries.iter().all(settlements_only);
        let log_ids = entries
            .iter()
            .zip(&encoded)
            .map(|(e, (_, bytes))| (e.log_id, bytes.len() as u64))
            .collect();
        {
            let mut pending = lock_pending(&self.pending);
            for entry in entries {
                pending.map.insert(entry.log_id.index, Arc::new(entry));
            }
        }
        self.writer
            .send(WriteOp::Append {
                entries: encoded,
                log_ids,
                flushed: callback,
                patient,
            })
            .map_err(|_| StorageIOError::write_logs(&std::io::Error::other("log writer thread stopped")))?;
        self.last_log_id = Some(last);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let from = log_id.index;
        self.write_and_wait(|done| WriteOp::Truncate { from, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        lock_pending(&self.pending).truncate(from);
        // The entry before `from` is the new last one (or the purge point).
        let reader = self.reader();
        let before = if from == 0 {
            Vec::new()
        } else {
            reader.read_range(from - 1, from).await?
        };
        self.last_log_id = before.last().map(|e| e.log_id).or(self.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.write_and_wait(|done| WriteOp::Purge { through: log_id, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        lock_pending(&self.pending).purge(log_id.index);
        self.last_purged = Some(log_id);
        if self.last_log_id.is_none_or(|last| last.index < log_id.index) {
            self.last_log_id = Some(log_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn entries_with(budget: u64, ids: &[LogId<u64>]) -> Entries {
        let mut entries = Entries {
            budget,
            ..Entries::default()
        };
        for log_id in ids {
            entries.map.insert(
                log_id.index,
                Arc::new(Entry {
                    log_id: *log_id,
                    payload: EntryPayload::Blank,
                }),
            );
        }
        entries
    }

    fn held(entries: &Entries) -> Vec<u64> {
        entries.map.keys().copied().collect()
    }

    fn entry_of(commands: Vec<warren_core::Command>) -> Entry<TypeConfig> {
        Entry {
            log_id: id(1, 1),
            payload: EntryPayload::Normal(crate::type_config::Proposal {
                tag: None,
                batch: warren_core::Batch {
                    now_ms: 0,
                    requests: commands
                        .into_iter()
                        .map(|command| warren_core::Request { origin: None, command })
                        .collect(),
                },
            }),
        }
    }

    /// Only entries no client waits on may wait for company in the writer:
    /// a publish (its confirm), any other command, an empty batch (a
    /// hand-over's barrier) or a blank entry flushes at once.
    #[test]
    fn only_an_entry_of_settlements_may_wait_for_company() {
        use warren_core::{Command, DeliveryTag};
        let ack = Command::Ack {
            delivery_tag: DeliveryTag(1),
            multiple: false,
        };
        let nack = Command::Nack {
            delivery_tag: DeliveryTag(2),
            multiple: true,
            requeue: true,
        };
        let reject = Command::Reject {
            delivery_tag: DeliveryTag(3),
            requeue: false,
        };
        assert!(settlements_only(&entry_of(vec![ack.clone(), nack, reject])));
        assert!(!settlements_only(&entry_of(vec![ack.clone(), Command::Tick])));
        assert!(!settlements_only(&entry_of(vec![Command::CloseChannel, ack])));
        assert!(!settlements_only(&entry_of(Vec::new())));
        assert!(!settlements_only(&Entry {
            log_id: id(1, 1),
            payload: EntryPayload::Blank,
        }));
    }

    #[test]
    fn flushed_entries_stay_within_the_budget_and_unflushed_ones_always() {
        let ids: Vec<_> = (1..=6).map(|i| id(1, i)).collect();
        let mut entries = entries_with(10, &ids);
        for log_id in &ids[..4] {
            entries.flushed(*log_id, 4);
        }
        assert_eq!(held(&entries), vec![3, 4, 5, 6], "the oldest flushed went first");
        assert_eq!(entries.flushed_bytes, 8);
        // An entry replaced by another term is not the one flushed.
        entries.flushed(id(2, 5), 4);
        assert_eq!(held(&entries), vec![3, 4, 5, 6]);
        assert_eq!(entries.flushed_bytes, 8);
        // A single entry over the budget is let go at once (read from disk).
        entries.flushed(ids[4], 40);
        assert_eq!(
            held(&entries),
            vec![6],
            "5 and all older flushed ones went; 6 is unflushed"
        );
        assert_eq!(entries.flushed_bytes, 0);
    }

    #[test]
    fn truncate_and_purge_forget_what_they_remove() {
        let ids: Vec<_> = (1..=8).map(|i| id(1, i)).collect();
        let mut entries = entries_with(1000, &ids);
        for log_id in &ids[..6] {
            entries.flushed(*log_id, 10);
        }
        entries.truncate(5);
        assert_eq!(held(&entries), vec![1, 2, 3, 4]);
        assert_eq!(entries.flushed_bytes, 40);
        entries.purge(2);
        assert_eq!(held(&entries), vec![3, 4]);
        assert_eq!(entries.flushed_bytes, 20);
        // Index 5 again in a new term, unflushed: evicting the old
        // flushed records must not touch it.
        for log_id in [id(2, 5), id(2, 6)] {
            entries.map.insert(
                log_id.index,
                Arc::new(Entry {
                    log_id,
                    payload: EntryPayload::Blank,
                }),
            );
        }
        entries.budget = 0;
        entries.flushed(id(2, 6), 1);
        assert_eq!(held(&entries), vec![5], "3, 4 and 6 went, the unflushed 5 stays");
        assert!(entries.flushed.is_empty());
    }
}
