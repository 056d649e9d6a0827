//! openraft's state machine: the broker, the last applied log id, the
//! membership, and snapshots of them.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::Member;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use warren_core::access::Access;
use warren_core::policy::Policies;
use warren_core::queue::QueuedMessage;
use warren_core::staged::StagedBodies;
use warren_core::{Body, BodyCodec, Broker, Command, Effect, Message, NodeId, Outcome, Properties, StoredBody, VHost};
use warren_store::{BodyRef, BodyStore, LogStore, StoreError};

use crate::codec::{decode, decode_from, encode, encode_into};
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
    pub(crate) membership: StoredMembership<u64, Member>,
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
    /// Held for the whole of building or installing a snapshot: openraft
    /// builds in a task of its own, and a build that overlapped an install
    /// could save the older state over the newer, or delete the body
    /// segments the install had just written (they are not in the older
    /// state).
    snapshots: Arc<tokio::sync::Mutex<()>>,
    /// Set (under the write lock) when an apply failed after changing the
    /// broker: the state holds part of an entry it does not count as
    /// applied, and must never be saved as a snapshot. The node stops.
    poisoned: std::sync::atomic::AtomicBool,
    /// Bumped after every applied change of users or permissions and every
    /// snapshot installed: front ends cache access checks until it moves.
    pub(crate) access_epoch: AtomicU64,
    /// Commit index, proposals, commit and apply times (Prometheus).
    pub(crate) counters: Arc<crate::raft_stats::RaftCounters>,
    /// Set by [`crate::Node`] while `Raft::new` runs. openraft 0.9 calls
    /// `get_current_snapshot` there (`StorageHelper::get_initial_state`)
    /// and keeps only the metadata; the copy for another node it would
    /// otherwise get holds every queued body, so each restart of a node
    /// with a deep backlog wrote the whole backlog to a scratch file once
    /// more (1.1 GB for a million 1 KiB messages, ten times that at ten
    /// million) before it listened, and the disk was still writing it back
    /// while consumers drained.
    pub(crate) raft_opening: std::sync::atomic::AtomicBool,
    /// The cluster's id, filled once the state holds it.
    pub(crate) cluster_id: Arc<crate::ClusterIdCell>,
    /// The highest batch time applied (and stamped: the node's
    /// `LeaderClock` shares it as its floor).
    pub(crate) clock_floor_ms: Arc<AtomicU64>,
}

impl Shared {
    /// Fills the cluster id cell from `state`, the first time it holds one.
    fn learn_cluster_id(&self, state: &SmState) {
        if self.cluster_id.get().is_none() {
            if let Some(id) = state.broker.cluster_id() {
                self.cluster_id.learn(id);
            }
        }
    }

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
/// The bodies arriving in parts (`warren_core::staged`), the users'
/// permissions and the policies travel beside the broker, whose own
/// encoding does not hold them.
#[derive(Serialize, Deserialize)]
struct Replicated {
    broker: Broker,
    sessions: Sessions,
    staged: StagedBodies,
    access: Access,
    policies: Policies,
    /// Which of the policies act (ADR 0017).
    acting_policies: BTreeSet<(VHost, String)>,
    /// The cluster's id (`Command::SetClusterId`).
    cluster_id: Option<String>,
    /// The latest batch time applied: the floor under the stamps of a
    /// node that restarts or installs this snapshot (ADR 0032).
    log_time_ms: u64,
}

/// A snapshot's data before it carried the log's time.
#[derive(Deserialize)]
struct ReplicatedV7 {
    broker: Broker,
    sessions: Sessions,
    staged: StagedBodies,
    access: Access,
    policies: Policies,
    acting_policies: BTreeSet<(VHost, String)>,
    cluster_id: Option<String>,
}

/// A snapshot's data before the cluster had an id.
#[derive(Deserialize)]
struct ReplicatedV6 {
    broker: Broker,
    sessions: Sessions,
    staged: StagedBodies,
    access: Access,
    policies: Policies,
    acting_policies: BTreeSet<(VHost, String)>,
}

/// A snapshot's data before policies acted (every policy in it is
/// store-only, as its build applied none).
#[derive(Deserialize)]
struct ReplicatedV3 {
    broker: Broker,
    sessions: Sessions,
    staged: StagedBodies,
    access: Access,
    policies: Policies,
}

/// A snapshot's data before permissions and policies.
#[derive(Deserialize)]
struct ReplicatedV2 {
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
            access: broker.access().clone(),
            policies: broker.policies().clone(),
            acting_policies: broker.policies().acting().clone(),
            cluster_id: broker.cluster_id().map(str::to_owned),
            log_time_ms: broker.log_time_ms(),
        }
    }

    fn into_parts(self) -> (Broker, Sessions) {
        let mut broker = self.broker;
        broker.set_staged_bodies(self.staged);
        broker.set_access(self.access);
        let mut policies = self.policies;
        policies.set_acting(self.acting_policies);
        broker.set_policies(policies);
        broker.set_cluster_id(self.cluster_id);
        broker.set_log_time_ms(self.log_time_ms);
        (broker, self.sessions)
    }
}

/// Decodes a snapshot's data into the broker (with its staged bodies and
/// permissions) and the sessions. Snapshots written before permissions
/// hold no grants (the node initializes them when it starts); those
/// before staged bodies hold the broker and sessions; those before
/// sessions, the broker alone.
fn decode_replicated(data: &[u8]) -> Result<(Broker, Sessions), crate::codec::CodecError> {
    let error = match decode::<Replicated>(data) {
        Ok(replicated) => return Ok(replicated.into_parts()),
        Err(error) => error,
    };
    if let Ok(v7) = decode::<ReplicatedV7>(data) {
        let replicated = Replicated {
            broker: v7.broker,
            sessions: v7.sessions,
            staged: v7.staged,
            access: v7.access,
            policies: v7.policies,
            acting_policies: v7.acting_policies,
            cluster_id: v7.cluster_id,
            log_time_ms: 0,
        };
        return Ok(replicated.into_parts());
    }
    if let Ok(v6) = decode::<ReplicatedV6>(data) {
        let replicated = Replicated {
            broker: v6.broker,
            sessions: v6.sessions,
            staged: v6.staged,
            access: v6.access,
            policies: v6.policies,
            acting_policies: v6.acting_policies,
            cluster_id: None,
            log_time_ms: 0,
        };
        return Ok(replicated.into_parts());
    }
    if let Ok(v3) = decode::<ReplicatedV3>(data) {
        let replicated = Replicated {
            broker: v3.broker,
            sessions: v3.sessions,
            staged: v3.staged,
            access: v3.access,
            policies: v3.policies,
            acting_policies: BTreeSet::new(),
            cluster_id: None,
            log_time_ms: 0,
        };
        return Ok(replicated.into_parts());
    }
    if let Ok(v2) = decode::<ReplicatedV2>(data) {
        let mut broker = v2.broker;
        broker.set_staged_bodies(v2.staged);
        return Ok((broker, v2.sessions));
    }
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
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

/// The replicated state machine of one node.
pub struct StateMachine {
    shared: Arc<Shared>,
    store: Arc<dyn LogStore>,
    /// Where queued bodies go, if the store has a body store.
    bodies: Option<Arc<BodyStore>>,
    /// The body store as the queues' pager (a backlog's pages go there).
    pager: Option<Arc<StorePager>>,
    /// The properties of the last message spilled, shared by the next ones
    /// that have the same (a publisher's messages usually do).
    shared_properties: Option<Arc<Properties>>,
    sink: Arc<dyn EffectSink>,
    node: NodeId,
    tracker: Arc<ProposalTracker>,
}

/// Builds a snapshot from a copy of the state taken under the lock.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    store: Arc<dyn LogStore>,
    bodies: Option<Arc<BodyStore>>,
}

/// A node's body store as the queues' pager ([`warren_core::ready`]): a
/// page is a record of the store, its messages encoded as this node keeps
/// them (bodies as handles), collected with the segment like a body.
pub(crate) struct StorePager {
    bodies: Arc<BodyStore>,
    /// The first page that could not be written or read.
    failure: std::sync::Mutex<Option<String>>,
}

impl StorePager {
    fn new(bodies: Arc<BodyStore>) -> Arc<Self> {
        Arc::new(StorePager {
            bodies,
            failure: std::sync::Mutex::new(None),
        })
    }

    /// The failure reported since the last call, if any.
    fn take_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn as_pager(self: &Arc<Self>) -> Arc<dyn warren_core::Pager> {
        self.clone()
    }
}

impl warren_core::Pager for StorePager {
    fn write_page(&self, entries: &[QueuedMessage]) -> Result<StoredBody, String> {
        let bytes = encode(&entries).map_err(|e| format!("encoding a page: {e}"))?;
        let at = self
            .bodies
            .append(&bytes::Bytes::from(bytes))
            .map_err(|e| format!("writing a page: {e}"))?;
        Ok(to_stored(at))
    }

    fn read_page(&self, at: &StoredBody) -> Result<Vec<QueuedMessage>, String> {
        let bytes = self
            .bodies
            .read(&to_ref(at))
            .map_err(|e| format!("reading the page at {}:{}: {e}", at.segment, at.offset))?;
        decode(&bytes).map_err(|e| format!("decoding the page at {}:{}: {e}", at.segment, at.offset))
    }

    fn failed(&self, why: String) {
        tracing::error!(error = %why, "a queue's page failed: this node stops");
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
    }
}

/// Runs `f` with `pager` (if the node has one) taking and giving back the
/// pages of queue backlogs on this thread.
fn paging<R>(pager: Option<&Arc<StorePager>>, f: impl FnOnce() -> R) -> R {
    match pager {
        Some(pager) => warren_core::with_pager(pager.as_pager(), f),
        None => f(),
    }
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
        Self::open_with_tracker(store, sink, tracker, Arc::default()).await
    }

    pub(crate) async fn open_with_tracker(
        store: Arc<dyn LogStore>,
        sink: Arc<dyn EffectSink>,
        tracker: Arc<ProposalTracker>,
        cluster_id: Arc<crate::ClusterIdCell>,
    ) -> Result<Self, StorageError<u64>> {
        let reading = store.clone();
        let pager = store.bodies().map(StorePager::new);
        let reading_pager = pager.clone();
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
            let (broker, sessions) = paging(reading_pager.as_ref(), || decode_replicated(&stored.data))
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
        let log_time_ms = state.broker.log_time_ms();
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            applied: Notify::new(),
            last_tick_ms: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(as_u64(snapshot_bytes)),
            snapshots: Arc::new(tokio::sync::Mutex::new(())),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            access_epoch: AtomicU64::new(0),
            counters: Arc::default(),
            raft_opening: std::sync::atomic::AtomicBool::new(false),
            cluster_id,
            clock_floor_ms: Arc::new(AtomicU64::new(log_time_ms)),
        });
        shared.learn_cluster_id(&shared.read());
        Ok(Self {
            shared,
            bodies: store.bodies(),
            pager,
            shared_properties: None,
            store,
            sink,
            node: NodeId(tracker.node),
            tracker,
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Runs `f` on the broker as applied so far (tests look inside).
    pub fn read<R>(&self, f: impl FnOnce(&Broker) -> R) -> R {
        f(&self.shared.read().broker)
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
fn save_snapshot(store: &dyn LogStore, meta: &SnapshotMeta<u64, Member>, data: &[u8]) -> Result<(), StorageError<u64>> {
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
fn snapshot_header(meta: &SnapshotMeta<u64, Member>, data_len: usize) -> Result<Vec<u8>, crate::codec::CodecError> {
    let mut header = vec![crate::codec::CODEC_VERSION];
    bincode::serialize_into(&mut header, meta)?;
    bincode::serialize_into(&mut header, &(data_len as u64))?;
    Ok(header)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let exclusive = self.shared.snapshots.clone().lock_owned().await;
        // Clone under the read lock (messages are `Arc`s, so this is cheap
        // next to encoding); encode and store while apply continues.
        // Sealing the body segment under the lock (apply writes bodies
        // under the write lock) puts every body this state refers to in a
        // segment up to `sealed`, and every later one after it.
        let (replicated, last_applied, membership, sealed) = {
            let state = self.shared.read();
            if self.shared.poisoned.load(Ordering::SeqCst) {
                return Err(StorageIOError::write_snapshot(
                    None,
                    openraft::AnyError::error("an apply failed part way: this state is not saved"),
                )
                .into());
            }
            let sealed = match &self.bodies {
                Some(bodies) => Some(bodies.seal().map_err(|e| StorageIOError::write_snapshot(None, &e))?),
                None => None,
            };
            let replicated = Replicated::new(&state.broker, &state.sessions);
            (replicated, state.last_applied, state.membership.clone(), sealed)
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
        let bodies = self.bodies.clone();
        let stored = run_blocking(move || -> Result<StoredSnapshot, StorageError<u64>> {
            let _exclusive = exclusive;
            let write_err = |e: &(dyn std::error::Error + 'static)| {
                StorageIOError::write_snapshot(Some(meta.signature()), openraft::AnyError::from_dyn(e, None))
            };
            // The log up to this snapshot goes once it is saved: the bodies
            // it held must be on stable storage first.
            if let Some(bodies) = &bodies {
                bodies.sync().map_err(|e| write_err(&e))?;
            }
            let data = encode(&replicated).map_err(|e| write_err(&e))?;
            save_snapshot(&*store, &meta, &data)?;
            if let (Some(bodies), Some(sealed)) = (&bodies, sealed) {
                collect_bodies(bodies, sealed, &replicated.broker).map_err(|e| write_err(&e))?;
            }
            Ok(StoredSnapshot { meta, data })
        })
        .await??;
        tracing::info!(snapshot = %stored.meta, bytes = stored.data.len(), "snapshot built");
        self.shared
            .snapshot_bytes
            .store(as_u64(stored.data.len()), Ordering::Relaxed);
        // openraft keeps only the metadata of a snapshot it built; a
        // follower that needs it gets `get_current_snapshot`'s file.
        let file = scratch_file(&*self.store).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(file),
        })
    }
}

/// Deletes the body segments up to `sealed` that no message of `broker`
/// (the state of the snapshot just saved) refers to. A message published
/// later has its body in a later segment; one that dies later stays dead.
fn collect_bodies(bodies: &BodyStore, sealed: u32, broker: &Broker) -> Result<(), StoreError> {
    let mut live: BTreeSet<u32> = broker
        .held_bodies()
        .filter_map(|body| match body {
            Body::Stored(stored) => Some(stored.segment),
            Body::Inline(_) => None,
        })
        .collect();
    live.extend(broker.held_pages().flat_map(|page| page.segments().iter().copied()));
    let removed = bodies.retain(sealed, &live)?;
    if removed > 0 {
        tracing::debug!(removed, through = sealed, "body segments deleted");
    }
    Ok(())
}

/// An empty file, deleted when closed, for a snapshot on its way in or out.
fn scratch_file(store: &dyn LogStore) -> std::io::Result<tokio::fs::File> {
    let file = match store.scratch_dir() {
        Some(dir) => tempfile::tempfile_in(dir)?,
        None => tempfile::tempfile()?,
    };
    Ok(tokio::fs::File::from_std(file))
}

/// A node's body store as the snapshot codec sees it.
struct StoreCodec(Arc<BodyStore>);

fn to_ref(at: &StoredBody) -> BodyRef {
    BodyRef {
        segment: at.segment,
        offset: at.offset,
        len: at.len,
    }
}

/// The core's form of a body store handle (the core does not know the
/// store, the store does not know the core).
fn to_stored(at: BodyRef) -> StoredBody {
    StoredBody {
        segment: at.segment,
        offset: at.offset,
        len: at.len,
    }
}

impl BodyCodec for StoreCodec {
    fn load(&self, at: &StoredBody) -> Result<bytes::Bytes, String> {
        self.0.read(&to_ref(at)).map_err(|e| e.to_string())
    }

    fn store(&self, body: &bytes::Bytes) -> Result<StoredBody, String> {
        let at = self.0.append(body).map_err(|e| e.to_string())?;
        Ok(to_stored(at))
    }
}

/// Runs `f` with bodies made portable through `bodies` (read from it when
/// encoding, written to it when decoding), if there is a body store.
pub(crate) fn portable<R>(bodies: Option<&Arc<BodyStore>>, f: impl FnOnce() -> R) -> R {
    match bodies {
        Some(bodies) => warren_core::with_body_codec(std::rc::Rc::new(StoreCodec(bodies.clone())), f),
        None => f(),
    }
}

/// `message` as the node keeps it once its body is at `at` in the body
/// store: the handle in place of the bytes, and the properties of the
/// previous message if they are the same.
fn kept_message(message: &Message, at: BodyRef, shared: &mut Option<Arc<Properties>>) -> Message {
    let properties = match shared {
        Some(previous) if previous.identical(&message.properties) => previous.clone(),
        _ => {
            *shared = Some(message.properties.clone());
            message.properties.clone()
        }
    };
    Message {
        exchange: message.exchange.clone(),
        routing_key: message.routing_key.clone(),
        properties,
        body: Body::Stored(to_stored(at)),
    }
}

/// `message` with its body read back from the node's store.
fn resolve(bodies: &BodyStore, message: &mut Arc<Message>) -> Result<(), StoreError> {
    if let Body::Stored(at) = &message.body {
        let bytes = bodies.read(&to_ref(at))?;
        *message = Arc::new(Message {
            body: Body::Inline(bytes),
            ..(**message).clone()
        });
    }
    Ok(())
}

/// Reads back the bodies of the messages that `effects` hand to this
/// node's connections (deliveries, gets, returns): the front end sends
/// bytes. Done under the state lock, before a snapshot can let the body's
/// segment go.
fn resolve_bodies(bodies: &BodyStore, own: NodeId, effects: &mut [Effect]) -> Result<(), StoreError> {
    for effect in effects.iter_mut() {
        if effect.channel().conn.node != own {
            continue;
        }
        match effect {
            Effect::Deliver { message, .. }
            | Effect::Reply {
                outcome: Ok(Outcome::GetOk { message, .. }),
                ..
            }
            | Effect::Reply {
                outcome:
                    Ok(Outcome::Published {
                        returned: Some(message),
                        ..
                    }),
                ..
            } => resolve(bodies, message)?,
            _ => {}
        }
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut responses = Vec::new();
        for entry in entries {
            let mut effects = Vec::new();
            let mut tick_ms = None;
            let mut duplicate = false;
            let mut access_changed = false;
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
                        let state = &mut *state;
                        match &self.bodies {
                            Some(bodies) => {
                                let mut failed = None;
                                let shared = &mut self.shared_properties;
                                let mut spill = |message: &Message| {
                                    let body = message.body.inline()?;
                                    match bodies.append(body) {
                                        Ok(at) => Some(kept_message(message, at, shared)),
                                        Err(e) => {
                                            failed.get_or_insert(e);
                                            None
                                        }
                                    }
                                };
                                paging(self.pager.as_ref(), || {
                                    state
                                        .broker
                                        .apply_spilling(&proposal.batch, &mut effects, Some(&mut spill));
                                });
                                let page_failure = self.pager.as_ref().and_then(|p| p.take_failure());
                                let resolved = match (failed, page_failure) {
                                    (Some(e), _) => Err(e),
                                    (None, Some(reason)) => Err(StoreError::Io {
                                        operation: "page a queue",
                                        reason,
                                    }),
                                    // One write of every body and page the entry added.
                                    (None, None) => resolve_bodies(bodies, self.node, &mut effects)
                                        .and_then(|()| bodies.write_out()),
                                };
                                if let Err(e) = resolved {
                                    self.shared.poisoned.store(true, Ordering::SeqCst);
                                    return Err(StorageIOError::apply(entry.log_id, &e).into());
                                }
                            }
                            None => state.broker.apply(&proposal.batch, &mut effects),
                        }
                        if proposal
                            .batch
                            .requests
                            .iter()
                            .any(|r| matches!(r.command, Command::Tick))
                        {
                            tick_ms = Some(proposal.batch.now_ms);
                        }
                        // The broker keeps the log's time; the floor follows it
                        // here, at open and at install alike.
                        self.shared
                            .clock_floor_ms
                            .fetch_max(state.broker.log_time_ms(), Ordering::Relaxed);
                        access_changed = proposal.batch.requests.iter().any(|r| r.command.changes_access());
                        if proposal
                            .batch
                            .requests
                            .iter()
                            .any(|r| matches!(r.command, Command::SetClusterId { .. }))
                        {
                            self.shared.learn_cluster_id(state);
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    }
                }
                state.last_applied = Some(entry.log_id);
            }
            if let (EntryPayload::Normal(proposal), false) = (&entry.payload, duplicate) {
                self.sink.applied(&proposal.batch, &effects);
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
            if access_changed {
                self.shared.access_epoch.fetch_add(1, Ordering::SeqCst);
                if let (EntryPayload::Normal(proposal), false) = (&entry.payload, duplicate) {
                    for request in &proposal.batch.requests {
                        if let Command::DeleteUser { name } = &request.command {
                            self.sink.user_deleted(name);
                        }
                    }
                }
            }
            responses.push(());
        }
        self.shared.counters.applied(responses.len() as u64, started.elapsed());
        self.shared.applied.notify_waiters();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            store: self.store.clone(),
            bodies: self.bodies.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        let file = scratch_file(&*self.store).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        let _exclusive = self.shared.snapshots.clone().lock_owned().await;
        let file = snapshot.into_std().await;
        let store = self.store.clone();
        let bodies = self.bodies.clone();
        let pager = self.pager.clone();
        let owned_meta = meta.clone();
        let (broker, sessions, data_len) =
            run_blocking(move || -> Result<(Broker, Sessions, usize), StorageError<u64>> {
                let meta = owned_meta;
                let read_err = |e: &(dyn std::error::Error + 'static)| {
                    StorageIOError::read_snapshot(Some(meta.signature()), openraft::AnyError::from_dyn(e, None))
                };
                let write_err = |e: &(dyn std::error::Error + 'static)| {
                    StorageIOError::write_snapshot(Some(meta.signature()), openraft::AnyError::from_dyn(e, None))
                };
                // Every body arrives with its message and goes to this
                // node's store as it is decoded: the snapshot is never
                // whole in memory.
                let (broker, sessions) =
                    paging(pager.as_ref(), || read_transfer(file, bodies.as_ref())).map_err(|e| read_err(&*e))?;
                if let Some(bodies) = &bodies {
                    bodies.sync().map_err(|e| write_err(&e))?;
                }
                let data = encode(&Replicated::new(&broker, &sessions)).map_err(|e| write_err(&e))?;
                save_snapshot(&*store, &meta, &data)?;
                if let Some(bodies) = &bodies {
                    let sealed = bodies.seal().map_err(|e| write_err(&e))?;
                    collect_bodies(bodies, sealed, &broker).map_err(|e| write_err(&e))?;
                }
                Ok((broker, sessions, data.len()))
            })
            .await??;
        {
            let mut state = self.shared.write();
            state.broker = broker;
            state.sessions = sessions;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            self.shared.learn_cluster_id(&state);
            self.shared
                .clock_floor_ms
                .fetch_max(state.broker.log_time_ms(), Ordering::Relaxed);
        }
        self.shared.access_epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(last) = meta.last_log_id {
            // A snapshot holds only committed entries.
            self.shared.counters.committed(last.index);
        }
        tracing::info!(snapshot = %meta, "snapshot installed");
        self.shared.snapshot_bytes.store(as_u64(data_len), Ordering::Relaxed);
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
        if self.shared.raft_opening.load(Ordering::SeqCst) {
            // openraft's start-up read: the metadata is all it keeps.
            let store = self.store.clone();
            let Some(stored) = run_blocking(move || load_snapshot(&*store)).await?? else {
                return Ok(None);
            };
            let file = scratch_file(&*self.store)
                .map_err(|e| StorageIOError::read_snapshot(Some(stored.meta.signature()), &e))?;
            return Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(file),
            }));
        }
        let store = self.store.clone();
        let bodies = self.bodies.clone();
        let pager = self.pager.clone();
        let written = run_blocking(move || -> Result<Option<Transfer>, StorageError<u64>> {
            // The bodies this snapshot refers to stay until it is copied.
            let _pinned = bodies.as_ref().map(|b| b.pin());
            let Some(stored) = load_snapshot(&*store)? else {
                return Ok(None);
            };
            let signature = Some(stored.meta.signature());
            let file = paging(pager.as_ref(), || {
                write_transfer(&*store, &stored.data, bodies.as_ref())
            })
            .map_err(|e| StorageIOError::read_snapshot(signature, openraft::AnyError::from_dyn(&*e, None)))?;
            Ok(Some((stored.meta, file)))
        })
        .await??;
        Ok(written.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A snapshot's metadata and its copy for another node.
type Transfer = (SnapshotMeta<u64, Member>, std::fs::File);

/// The snapshot `data` (as stored: bodies as handles into this node's
/// store) in the form another node can install: a file with every body's
/// bytes in place of its handle, written as it is read.
fn write_transfer(
    store: &dyn LogStore,
    data: &[u8],
    bodies: Option<&Arc<BodyStore>>,
) -> Result<std::fs::File, BoxError> {
    let mut file = match store.scratch_dir() {
        Some(dir) => tempfile::tempfile_in(dir)?,
        None => tempfile::tempfile()?,
    };
    match bodies {
        None => file.write_all(data)?,
        Some(_) => {
            let (broker, sessions) = decode_replicated(data)?;
            let mut out = BufWriter::with_capacity(1 << 20, &mut file);
            portable(bodies, || encode_into(&Replicated::new(&broker, &sessions), &mut out))?;
            out.flush()?;
        }
    }
    file.rewind()?;
    Ok(file)
}

/// Decodes a snapshot received from another node, writing its bodies to
/// `bodies` as they come. A snapshot of an older encoding is read whole.
fn read_transfer(mut file: std::fs::File, bodies: Option<&Arc<BodyStore>>) -> Result<(Broker, Sessions), BoxError> {
    file.rewind()?;
    let streamed = {
        let mut input = BufReader::with_capacity(1 << 20, &mut file);
        portable(bodies, || decode_from::<Replicated>(&mut input))
    };
    match streamed {
        Ok(replicated) => Ok(replicated.into_parts()),
        Err(streaming_error) => {
            file.rewind()?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            match decode_replicated(&data) {
                Ok(decoded) => Ok(decoded),
                Err(_) => Err(Box::new(streaming_error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
    use warren_core::test_support::{declare_queue, message, publish_message};
    use warren_core::{Batch, Body, Request};
    use warren_store::{SegmentConfig, SegmentStore};

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
    fn spilled_messages_share_equal_properties() {
        let at = BodyRef {
            segment: 3,
            offset: 8,
            len: 4,
        };
        let persistent = |key: &str| Message {
            exchange: warren_core::ExchangeName::from(""),
            routing_key: key.to_owned(),
            properties: Arc::new(Properties {
                delivery_mode: Some(2),
                ..Properties::default()
            }),
            body: Body::Inline(bytes::Bytes::from_static(b"body")),
        };
        let mut shared = None;
        let first = kept_message(&persistent("a"), at, &mut shared);
        let second = kept_message(&persistent("b"), at, &mut shared);
        assert!(Arc::ptr_eq(&first.properties, &second.properties), "one copy");
        assert_eq!(second.routing_key, "b");
        assert_eq!(
            second.body,
            Body::Stored(StoredBody {
                segment: 3,
                offset: 8,
                len: 4
            })
        );
        let mut other = persistent("c");
        Arc::make_mut(&mut other.properties).priority = Some(1);
        let third = kept_message(&other, at, &mut shared);
        assert!(
            !Arc::ptr_eq(&third.properties, &second.properties),
            "other properties, another copy"
        );
        assert_eq!(third.properties.priority, Some(1));
    }

    #[test]
    fn snapshots_carry_bodies_in_progress() {
        let broker = broker_with_staged_parts();
        let data = encode(&Replicated::new(&broker, &Sessions::default())).expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode");
        assert_eq!(decoded, broker, "the staged parts came back with the broker");
    }

    /// A broker with staged parts, a user and a grant to it.
    fn broker_with_grants() -> Broker {
        let mut broker = broker_with_staged_parts();
        let user = warren_core::UserName::from("bob");
        let requests = [
            Command::PutUser {
                name: user.clone(),
                password_hash: "hash".into(),
                tags: Vec::new(),
            },
            Command::SetPermissions {
                user,
                vhost: warren_core::VHost::from("/"),
                configure: "^bob".into(),
                write: ".*".into(),
                read: String::new(),
            },
            Command::PutPolicy(warren_core::policy::Policy {
                vhost: warren_core::VHost::from("/"),
                name: "limit".into(),
                pattern: "^jobs$".into(),
                apply_to: "queues".into(),
                priority: 1,
                definition: r#"{"max-length":10}"#.into(),
            }),
        ]
        .map(|command| warren_core::Request { origin: None, command });
        let batch = warren_core::Batch {
            now_ms: 1,
            requests: requests.into(),
        };
        broker.apply(&batch, &mut Vec::new());
        assert_eq!(broker.access().permissions().count(), 1);
        assert_eq!(broker.policies().iter().count(), 1);
        broker
    }

    #[test]
    fn snapshots_carry_permissions_and_policies() {
        let broker = broker_with_grants();
        let data = encode(&Replicated::new(&broker, &Sessions::default())).expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode");
        assert_eq!(decoded.access(), broker.access());
        assert_eq!(decoded.policies(), broker.policies());
        assert_eq!(decoded, broker);
    }

    #[test]
    fn snapshots_carry_which_policies_act_and_older_ones_hold_none_that_do() {
        let mut broker = broker_with_grants();
        let acting = warren_core::policy::Policy {
            vhost: warren_core::VHost::from("/"),
            name: "acting".into(),
            pattern: "^jobs$".into(),
            apply_to: "queues".into(),
            priority: 2,
            definition: r#"{"max-length":3}"#.into(),
        };
        let requests = [
            Command::DeclareQueue {
                vhost: warren_core::VHost::from("/"),
                name: warren_core::QueueName::from("jobs"),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: amq_protocol_types::FieldTable::default(),
            },
            Command::SetPolicy(acting),
        ]
        .map(|command| warren_core::Request { origin: None, command });
        broker.apply(
            &warren_core::Batch {
                now_ms: 2,
                requests: requests.into(),
            },
            &mut Vec::new(),
        );
        let root = warren_core::VHost::from("/");
        assert!(broker.policies().acts(&root, "acting"));
        assert!(!broker.policies().acts(&root, "limit"), "stored by PutPolicy");
        let data = encode(&Replicated::new(&broker, &Sessions::default())).expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode");
        assert_eq!(decoded.policies().acting(), broker.policies().acting());
        assert_eq!(decoded, broker);
        let jobs = |b: &Broker| {
            b.vhosts()[&root].queues[&warren_core::QueueName::from("jobs")]
                .policy
                .clone()
        };
        assert_eq!(jobs(&decoded).as_deref(), Some("acting"));

        // The layout before policies acted: every policy in it store-only.
        #[derive(Serialize)]
        struct V3<'a> {
            broker: &'a Broker,
            sessions: &'a Sessions,
            staged: &'a StagedBodies,
            access: &'a Access,
            policies: &'a Policies,
        }
        let old = broker_with_grants();
        let data = encode(&V3 {
            broker: &old,
            sessions: &Sessions::default(),
            staged: old.staged_bodies(),
            access: old.access(),
            policies: old.policies(),
        })
        .expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode the old layout");
        assert_eq!(decoded.policies().iter().count(), 1);
        assert!(decoded.policies().acting().is_empty());
        // Nor does that layout carry the log's time.
        let mut expected = old.clone();
        expected.set_log_time_ms(0);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_snapshot_carries_the_cluster_id_and_one_from_before_ids_decodes_without() {
        let mut broker = broker_with_grants();
        broker.apply(
            &warren_core::Batch {
                now_ms: 1,
                requests: vec![warren_core::Request {
                    origin: None,
                    command: Command::SetClusterId { id: "5e1f".to_owned() },
                }],
            },
            &mut Vec::new(),
        );
        let data = encode(&Replicated::new(&broker, &Sessions::default())).expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode");
        assert_eq!(decoded.cluster_id(), Some("5e1f"));
        assert_eq!(decoded.log_time_ms(), 1);

        // The layout before the log's time: the id stays, the time is 0.
        #[derive(Serialize)]
        struct V7<'a> {
            broker: &'a Broker,
            sessions: &'a Sessions,
            staged: &'a StagedBodies,
            access: &'a Access,
            policies: &'a Policies,
            acting_policies: &'a BTreeSet<(VHost, String)>,
            cluster_id: Option<&'a str>,
        }
        let data = encode(&V7 {
            broker: &broker,
            sessions: &Sessions::default(),
            staged: broker.staged_bodies(),
            access: broker.access(),
            policies: broker.policies(),
            acting_policies: broker.policies().acting(),
            cluster_id: broker.cluster_id(),
        })
        .expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode the layout before the log's time");
        assert_eq!(decoded.cluster_id(), Some("5e1f"));
        assert_eq!(decoded.log_time_ms(), 0);

        // The layout before cluster ids: the acting policies stay.
        #[derive(Serialize)]
        struct V6<'a> {
            broker: &'a Broker,
            sessions: &'a Sessions,
            staged: &'a StagedBodies,
            access: &'a Access,
            policies: &'a Policies,
            acting_policies: &'a BTreeSet<(VHost, String)>,
        }
        let data = encode(&V6 {
            broker: &broker,
            sessions: &Sessions::default(),
            staged: broker.staged_bodies(),
            access: broker.access(),
            policies: broker.policies(),
            acting_policies: broker.policies().acting(),
        })
        .expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode the layout before ids");
        assert_eq!(decoded.cluster_id(), None);
        assert_eq!(decoded.log_time_ms(), 0, "nor the log's time");
        assert_eq!(decoded.access(), broker.access());
        assert_eq!(decoded.policies().acting(), broker.policies().acting());
    }

    #[test]
    fn snapshots_written_before_permissions_still_decode_without_grants() {
        #[derive(Serialize)]
        struct V2<'a> {
            broker: &'a Broker,
            sessions: &'a Sessions,
            staged: &'a StagedBodies,
        }
        let broker = broker_with_grants();
        let data = encode(&V2 {
            broker: &broker,
            sessions: &Sessions::default(),
            staged: broker.staged_bodies(),
        })
        .expect("encode");
        let (decoded, _) = decode_replicated(&data).expect("decode the old layout");
        assert_eq!(decoded.staged_bodies(), broker.staged_bodies());
        assert!(decoded.access().permissions().next().is_none());
        assert!(
            !decoded.access().is_initialized(),
            "the node initializes it when it starts"
        );
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

    // openraft's start-up read of the snapshot (ADR 0019's addendum).

    struct Discard;

    impl EffectSink for Discard {
        fn emit(&self, _effects: Vec<warren_core::Effect>) {}
    }

    fn entry(index: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Proposal {
                tag: None,
                batch: Batch {
                    now_ms: 1_700_000_000_000,
                    requests: commands
                        .into_iter()
                        .map(|command| Request { origin: None, command })
                        .collect(),
                },
            }),
        }
    }

    /// openraft's start-up read of the current snapshot (while `Raft::new`
    /// runs) gets the metadata and an empty file, not a copy of every body;
    /// afterwards a follower's request gets the bodies.
    #[tokio::test]
    async fn the_start_up_read_of_the_snapshot_copies_no_bodies() {
        const MESSAGES: usize = 50;
        const BODY_BYTES: usize = 4096;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn LogStore> =
            Arc::new(SegmentStore::open(dir.path(), &SegmentConfig::default()).expect("open store"));
        let mut sm = StateMachine::open(1, store.clone(), Arc::new(Discard))
            .await
            .expect("open");
        let publishes = (0..MESSAGES)
            .map(|i| {
                let mut m = message("", "q", "");
                m.body = Body::Inline(bytes::Bytes::from(vec![u8::try_from(i).expect("small"); BODY_BYTES]));
                publish_message(m)
            })
            .collect();
        sm.apply(vec![entry(1, vec![declare_queue("q")]), entry(2, publishes)])
            .await
            .expect("apply");
        let built = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");

        let shared = sm.shared();
        shared.raft_opening.store(true, Ordering::SeqCst);
        let at_start = sm.get_current_snapshot().await.expect("read").expect("one");
        assert_eq!(at_start.meta, built.meta);
        let len = at_start.snapshot.metadata().await.expect("metadata").len();
        assert_eq!(len, 0, "nothing copied for openraft's start-up read");

        shared.raft_opening.store(false, Ordering::SeqCst);
        let for_follower = sm.get_current_snapshot().await.expect("read").expect("one");
        assert_eq!(for_follower.meta, built.meta);
        let len = for_follower.snapshot.metadata().await.expect("metadata").len();
        assert!(
            len > (MESSAGES * BODY_BYTES) as u64,
            "a follower's copy carries the bodies: {len} bytes"
        );
    }

    /// The log's time survives a snapshot (ADR 0032): a node that restarts
    /// from one, or installs one from the leader, starts its clock floor
    /// there, so that leading next with a clock behind it does not stamp
    /// times before those the others applied. Before, its floor was 0
    /// until the next batch applied.
    #[tokio::test]
    async fn a_snapshot_carries_the_logs_time_to_the_clock_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open_store = |path: &std::path::Path| -> Arc<dyn LogStore> {
            Arc::new(SegmentStore::open(path, &SegmentConfig::default()).expect("open store"))
        };
        let store = open_store(dir.path());
        let mut sm = StateMachine::open(1, store.clone(), Arc::new(Discard))
            .await
            .expect("open");
        let mut late = entry(2, vec![declare_queue("r")]);
        if let EntryPayload::Normal(proposal) = &mut late.payload {
            proposal.batch.now_ms = 1_700_000_600_000;
        }
        sm.apply(vec![entry(1, vec![declare_queue("q")]), late, entry(3, vec![])])
            .await
            .expect("apply");
        assert_eq!(sm.shared().clock_floor_ms.load(Ordering::Relaxed), 1_700_000_600_000);
        sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        let sent = sm.get_current_snapshot().await.expect("read").expect("one");
        drop(sm);

        let reopened = StateMachine::open(1, store, Arc::new(Discard)).await.expect("reopen");
        assert_eq!(
            reopened.shared().clock_floor_ms.load(Ordering::Relaxed),
            1_700_000_600_000,
            "restarted from the snapshot"
        );

        let other_dir = tempfile::tempdir().expect("tempdir");
        let mut other = StateMachine::open(2, open_store(other_dir.path()), Arc::new(Discard))
            .await
            .expect("open the other");
        assert_eq!(other.shared().clock_floor_ms.load(Ordering::Relaxed), 0);
        let mut file = other.begin_receiving_snapshot().await.expect("receive");
        let mut data = sent.snapshot;
        tokio::io::copy(&mut data, &mut file).await.expect("copy");
        other.install_snapshot(&sent.meta, file).await.expect("install");
        assert_eq!(
            other.shared().clock_floor_ms.load(Ordering::Relaxed),
            1_700_000_600_000,
            "installed from the leader"
        );
    }
}
