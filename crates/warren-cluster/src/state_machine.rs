//! openraft's state machine: the broker, the last applied log id, the
//! membership, and snapshots of them.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use warren_core::staged::StagedBodies;
use warren_core::{Broker, Command, NodeId};
use warren_store::LogStore;

use crate::codec::{decode, encode};
use crate::effect_sink::EffectSink;
use crate::log_store::run_blocking;
use crate::sessions::Sessions;
use crate::tracker::ProposalTracker;
use crate::type_config::TypeConfig;

/// What the state machine holds; shared with [`crate::Node::read`].
pub(crate) struct SmState {
    pub(crate) broker: Broker,
    /// Which proposer batches were applied (a resent copy is skipped).
    pub(crate) sessions: Sessions,
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
}

/// The state behind its lock, plus the signals other tasks wait on.
pub(crate) struct Shared {
    state: RwLock<SmState>,
    /// Notified after every applied entry (the tick driver re-checks).
    pub(crate) applied: Notify,
    /// `now_ms` of the last applied batch that held a `Tick`.
    pub(crate) last_tick_ms: AtomicU64,
    /// Bytes of the newest snapshot built, installed or loaded (the
    /// size-based snapshot trigger waits for at least this much new log).
    pub(crate) snapshot_bytes: AtomicU64,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SmState> {
        // Apply replaces the state only through whole assignments or
        // `Broker::apply`; a panic there is fatal for the Raft node anyway.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a snapshot's data holds: the state every replica computes alike.
/// The bodies arriving in parts (`warren_core::staged`) travel beside the
/// broker, whose own encoding does not hold them.
#[derive(Serialize, Deserialize)]
struct Replicated {
    broker: Broker,
    sessions: Sessions,
    staged: StagedBodies,
}

/// A snapshot's data before bodies could arrive in parts.
#[derive(Deserialize)]
struct ReplicatedV1 {
    broker: Broker,
    sessions: Sessions,
}

impl Replicated {
    fn new(broker: &Broker, sessions: &Sessions) -> Self {
        Self {
            broker: broker.clone(),
            sessions: sessions.clone(),
            staged: broker.staged_bodies().clone(),
        }
    }
}

/// Decodes a snapshot's data into the broker (with its staged bodies) and
/// the sessions. Snapshots written before staged bodies hold the broker
/// and sessions; those before sessions, the broker alone.
fn decode_replicated(data: &[u8]) -> Result<(Broker, Sessions), crate::codec::CodecError> {
    let error = match decode::<Replicated>(data) {
        Ok(replicated) => {
            let mut broker = replicated.broker;
            broker.set_staged_bodies(replicated.staged);
            return Ok((broker, replicated.sessions));
        }
        Err(error) => error,
    };
    if let Ok(v1) = decode::<ReplicatedV1>(data) {
        return Ok((v1.broker, v1.sessions));
    }
    match decode::<Broker>(data) {
        Ok(broker) => Ok((broker, Sessions::default())),
        Err(_) => Err(error),
    }
}

/// A snapshot as stored: openraft's metadata and the encoded broker.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

/// The replicated state machine of one node.
pub struct StateMachine {
    shared: Arc<Shared>,
    store: Arc<dyn LogStore>,
    sink: Arc<dyn EffectSink>,
    node: NodeId,
    tracker: Arc<ProposalTracker>,
}

/// Builds a snapshot from a copy of the state taken under the lock.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    store: Arc<dyn LogStore>,
}

impl StateMachine {
    /// Opens the state machine: the last snapshot in `store`, or a fresh
    /// broker. Reads the store on a blocking thread.
    ///
    /// # Errors
    /// The store cannot be read or its snapshot cannot be decoded.
    pub async fn open(
        node: u64,
        store: Arc<dyn LogStore>,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Self, StorageError<u64>> {
        let tracker = Arc::new(ProposalTracker::new(node));
        Self::open_with_tracker(store, sink, tracker).await
    }

    pub(crate) async fn open_with_tracker(
        store: Arc<dyn LogStore>,
        sink: Arc<dyn EffectSink>,
        tracker: Arc<ProposalTracker>,
    ) -> Result<Self, StorageError<u64>> {
        let reading = store.clone();
        let (state, snapshot_bytes) = run_blocking(move || -> Result<(SmState, usize), StorageError<u64>> {
            let Some(stored) = load_snapshot(&*reading)? else {
                let empty = SmState {
                    broker: Broker::new(),
                    sessions: Sessions::default(),
                    last_applied: None,
                    membership: StoredMembership::default(),
                };
                return Ok((empty, 0));
            };
            let (broker, sessions) = decode_replicated(&stored.data)
                .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), &e))?;
            let state = SmState {
                broker,
                sessions,
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership,
            };
            Ok((state, stored.data.len()))
        })
        .await??;
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            applied: Notify::new(),
            last_tick_ms: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(as_u64(snapshot_bytes)),
        });
        Ok(Self {
            shared,
            store,
            sink,
            node: NodeId(tracker.node),
            tracker,
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

fn as_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn load_snapshot(store: &dyn LogStore) -> Result<Option<StoredSnapshot>, StorageError<u64>> {
    let Some(bytes) = store
        .get_snapshot()
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?
    else {
        return Ok(None);
    };
    let stored: StoredSnapshot = decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    Ok(Some(stored))
}

/// Stores the snapshot `data` with its `meta`: the same bytes as
/// `encode(&StoredSnapshot { meta, data })`, written as a small header and
/// the data itself, so the data (every queued message) is not copied again.
fn save_snapshot(
    store: &dyn LogStore,
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> Result<(), StorageError<u64>> {
    let header =
        snapshot_header(meta, data.len()).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    store
        .put_snapshot(&[&header, data])
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    Ok(())
}

/// What `encode(&StoredSnapshot { meta, data })` writes before the bytes
/// of `data`: the codec version, `meta`, and the length of `data` (bincode
/// encodes a `Vec<u8>` as a `u64` length and the bytes).
fn snapshot_header(meta: &SnapshotMeta<u64, BasicNode>, data_len: usize) -> Result<Vec<u8>, crate::codec::CodecError> {
    let mut header = vec![crate::codec::CODEC_VERSION];
    bincode::serialize_into(&mut header, meta)?;
    bincode::serialize_into(&mut header, &(data_len as u64))?;
    Ok(header)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        // Clone under the read lock (messages are `Arc`s, so this is cheap
        // next to encoding); encode and store while apply continues.
        let (replicated, last_applied, membership) = {
            let state = self.shared.read();
            let replicated = Replicated::new(&state.broker, &state.sessions);
            (replicated, state.last_applied, state.membership.clone())
        };
        let millis = crate::clock::wall_clock_ms();
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{millis}", log_id.leader_id, log_id.index),
            None => format!("none-{millis}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let store = self.store.clone();
        let stored = run_blocking(move || -> Result<StoredSnapshot, StorageError<u64>> {
            let data = encode(&replicated).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            save_snapshot(&*store, &meta, &data)?;
            Ok(StoredSnapshot { meta, data })
        })
        .await??;
        tracing::info!(snapshot = %stored.meta, bytes = stored.data.len(), "snapshot built");
        self.shared
            .snapshot_bytes
            .store(as_u64(stored.data.len()), Ordering::Relaxed);
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            let mut effects = Vec::new();
            let mut tick_ms = None;
            let mut duplicate = false;
            {
                let mut state = self.shared.write();
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(proposal)
                        if proposal
                            .tag
                            .as_ref()
                            .is_some_and(|tag| !state.sessions.admit(tag, entry.log_id.index)) =>
                    {
                        // A copy of a batch already applied, resent after an
                        // unknown outcome: skipped, on every replica.
                        duplicate = true;
                    }
                    EntryPayload::Normal(proposal) => {
                        state.broker.apply(&proposal.batch, &mut effects);
                        if proposal
                            .batch
                            .requests
                            .iter()
                            .any(|r| matches!(r.command, Command::Tick))
                        {
                            tick_ms = Some(proposal.batch.now_ms);
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    }
                }
                state.last_applied = Some(entry.log_id);
            }
            if let (EntryPayload::Normal(proposal), false) = (&entry.payload, duplicate) {
                self.tracker.applied(proposal.tag.as_ref(), effects, &*self.sink);
                let own = self.node;
                if proposal
                    .batch
                    .requests
                    .iter()
                    .any(|r| matches!(r.command, Command::NodeDown { node } if node == own))
                {
                    tracing::warn!(
                        node = self.node.0,
                        "the cluster declared this node down: closing its connections"
                    );
                    self.sink.drop_all_connections();
                }
            }
            if let Some(now_ms) = tick_ms {
                self.shared.last_tick_ms.fetch_max(now_ms, Ordering::Relaxed);
            }
            responses.push(());
        }
        self.shared.applied.notify_waiters();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let store = self.store.clone();
        let (replicated, stored) = run_blocking(
            move || -> Result<((Broker, Sessions), StoredSnapshot), StorageError<u64>> {
                let replicated = decode_replicated(&stored.data)
                    .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), &e))?;
                save_snapshot(&*store, &stored.meta, &stored.data)?;
                Ok((replicated, stored))
            },
        )
        .await??;
        {
            let mut state = self.shared.write();
            state.broker = replicated.0;
            state.sessions = replicated.1;
            state.last_applied = stored.meta.last_log_id;
            state.membership = stored.meta.last_membership;
        }
        tracing::info!(snapshot = %meta, "snapshot installed");
        self.shared
            .snapshot_bytes
            .store(as_u64(stored.data.len()), Ordering::Relaxed);
        // The entries the snapshot covers are not applied one by one here,
        // so their replies would never come: answer what is in flight now.
        self.tracker
            .settle_all_failed("outcome unknown: this node installed a snapshot", &*self.sink);
        // Nor were their deliveries: this node's consumers would wait for
        // messages the broker counts as delivered to them.
        self.sink.drop_all_connections();
        self.shared.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let store = self.store.clone();
        let stored = run_blocking(move || load_snapshot(&*store)).await??;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker with a body in progress on one channel.
    fn broker_with_staged_parts() -> Broker {
        let mut broker = Broker::new();
        let channel = warren_core::ChannelId {
            conn: warren_core::ConnectionId {
                node: NodeId(1),
                boot: 1,
                seq: 1,
            },
            channel: 1,
        };
        let batch = warren_core::Batch {
            now_ms: 1,
            requests: vec![warren_core::Request {
                origin: Some(channel),
                command: Command::StageBody {
                    body: 1,
                    index: 0,
                    part: bytes::Bytes::from_static(b"part"),
                },
            }],
        };
        broker.apply(&batch, &mut Vec::new());
        assert_eq!(broker.staged_bodies().len(), 1);
        broker
    }

    #[test]
    fn snapshots_carry_bodies_in_progress() {
        let broker = broker_with_staged_parts();
        let data = encode(&Replicated::new(&broker, &Sessions::default())).expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode");
        assert_eq!(decoded, broker, "the staged parts came back with the broker");
    }

    #[test]
    fn snapshots_written_before_staged_bodies_still_decode() {
        #[derive(Serialize)]
        struct V1<'a> {
            broker: &'a Broker,
            sessions: &'a Sessions,
        }
        let broker = broker_with_staged_parts();
        let data = encode(&V1 {
            broker: &broker,
            sessions: &Sessions::default(),
        })
        .expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode the old layout");
        assert!(decoded.staged_bodies().is_empty(), "the old layout has none");
        assert_eq!(decoded.queue_summaries(), broker.queue_summaries());
        let broker_only = encode(&broker).expect("encode");
        assert!(
            decode_replicated(&broker_only).is_ok(),
            "and the layout before sessions"
        );
    }

    #[test]
    fn a_snapshot_is_stored_as_the_encoding_of_stored_snapshot() {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "3-1-42-1700000000000".to_owned(),
        };
        let data = encode(&Replicated::new(&Broker::new(), &Sessions::default())).expect("encode");
        let store = warren_store::MemStore::new();
        save_snapshot(&store, &meta, &data).expect("save");
        let stored_bytes = store.get_snapshot().expect("read").expect("stored");
        let expected = encode(&StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .expect("encode");
        assert_eq!(stored_bytes, expected, "same bytes as before the split write");
        let loaded = load_snapshot(&store).expect("load").expect("present");
        assert_eq!((loaded.meta, loaded.data), (meta, data));
    }
}
