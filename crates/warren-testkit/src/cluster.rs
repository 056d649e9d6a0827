//! An in-process cluster of Warren nodes over a [`FaultNet`], each on a
//! `MemStore`, or (with [`ClusterOptions::power_cut_storage`]) on the real
//! segment engine over a [`PowerCutFs`] that [`Cluster::power_cut`] can
//! take power from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warren_cluster::{Node, NodeConfig, PeerError};
use warren_core::{Broker, ChannelId, Command, ConnectionId, NodeId, Request};
use warren_store::vfs::PowerCutFs;
use warren_store::{LogStore, MemStore, SegmentConfig, SegmentStore};

use crate::client::CHANNEL;
use crate::error::TestkitError;
use crate::ledger::{Event, Ledger};
use crate::network::{node_addr, FaultNet};
use crate::node_runtime::NodeRuntime;
use crate::router::{AppliedAcks, Router};

/// How the cluster's nodes run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes started by [`Cluster::start`] (ids 1..=nodes).
    pub nodes: u64,
    /// Log entries between snapshots; small, so snapshots and snapshot
    /// installs happen within a short test.
    pub snapshot_every: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A follower's bound on one forwarded batch.
    pub forward_timeout_ms: u64,
    pub max_batch: usize,
    /// The leader declares a silent member down after this long. Long by
    /// default: a `NodeDown` closes an isolated node's connections in the
    /// broker while its test clients still believe they hold their
    /// messages (they learn it only when the node hears from the others
    /// again), which the ledger's "held by two channels" check cannot tell
    /// from a bug. Failure detection is tested with real processes
    /// (tests/tests/e2e/cluster.rs); tests here that want it set it lower.
    pub node_down_after_ms: u64,
    /// Bytes of entries per AppendEntries. Small by default (a few
    /// entries), so a lagging follower catches up through many partial
    /// appends, the path big batches take in production.
    pub append_budget_bytes: u64,
    /// Run every node on the segment engine over its own [`PowerCutFs`]
    /// (small segments, so they rotate), instead of a `MemStore` that
    /// keeps everything.
    pub power_cut_storage: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            snapshot_every: 200,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            forward_timeout_ms: 1_000,
            max_batch: 256,
            node_down_after_ms: 3_600_000,
            append_budget_bytes: 4096,
            power_cut_storage: false,
        }
    }
}

/// Segments of the power-cut engine: small, so a short test rotates them.
const POWER_CUT_SEGMENT_BYTES: u64 = 64 * 1024;

/// One node id's state across restarts: its store survives a kill.
struct Slot {
    store: Arc<dyn LogStore>,
    /// The file system under `store`, with `power_cut_storage`.
    fs: Option<PowerCutFs>,
    running: Option<Running>,
    /// Removed from the membership: never started again.
    removed: bool,
    /// The node's incarnation, kept across its restarts as a data
    /// directory keeps it (a wiped store draws a new one).
    incarnation: Arc<warren_cluster::IncarnationCell>,
}

/// A running incarnation of a node.
#[derive(Clone)]
struct Running {
    node: Node,
    router: Arc<Router>,
    boot: u64,
    /// The thread and runtime every task of this incarnation runs on.
    runtime: Arc<NodeRuntime>,
    /// Watches for a fatal stop of the Raft core (see
    /// [`Cluster::fatal_restarts`]); aborted when the node is stopped.
    supervisor: Supervisor,
}

/// The watch on one incarnation's Raft core (see [`Cluster::supervise`]).
#[derive(Clone)]
struct Supervisor {
    task: tokio::task::AbortHandle,
    /// Set before the test stops the node on purpose (a kill's power cut
    /// makes its core fail too): the supervisor then does nothing.
    off: Arc<std::sync::atomic::AtomicBool>,
}

impl Supervisor {
    fn stand_down(&self) {
        self.off.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// A running node, as a client sees it.
#[derive(Clone)]
pub struct NodeHandle {
    pub node: Node,
    pub router: Arc<Router>,
    pub boot: u64,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.node)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: ClusterOptions,
    net: Arc<FaultNet>,
    slots: Mutex<BTreeMap<u64, Slot>>,
    next_conn: AtomicU64,
    /// Where a killed node's connections are recorded as gone.
    ledger: Mutex<Option<Arc<Ledger>>>,
    /// The acks every node applied, across restarts.
    acks: Arc<AppliedAcks>,
    /// Nodes restarted because their Raft core stopped on a fatal error.
    fatal_restarts: AtomicU64,
    /// Starts the supervisor tried after such a stop that failed.
    failed_restarts: AtomicU64,
}

/// An in-process cluster. Cheap to clone; clients hold a clone to find
/// running nodes.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("seed", &self.seed())
            .field("running", &self.running_ids())
            .finish_non_exhaustive()
    }
}

/// Bound on waits for the cluster to reach a state (a guard against
/// hangs, not a timing assertion).
const WAIT_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

impl Cluster {
    /// Starts `options.nodes` nodes: node 1 bootstraps, the others join
    /// through it over the fault network (which has no faults yet).
    ///
    /// # Errors
    /// A node did not start or join.
    pub async fn start(options: ClusterOptions, seed: u64) -> Result<Cluster, TestkitError> {
        let cluster = Cluster {
            inner: Arc::new(Inner {
                net: FaultNet::new(seed),
                options: options.clone(),
                slots: Mutex::new(BTreeMap::new()),
                next_conn: AtomicU64::new(1),
                ledger: Mutex::new(None),
                acks: Arc::new(AppliedAcks::new()),
                fatal_restarts: AtomicU64::new(0),
                failed_restarts: AtomicU64::new(0),
            }),
        };
        for id in 1..=options.nodes.max(1) {
            cluster.start_new(id).await?;
        }
        Ok(cluster)
    }

    pub fn seed(&self) -> u64 {
        self.inner.net.seed()
    }

    /// Sets node `node_id`'s clock `offset_ms` off the wall clock (0 puts
    /// it right); nothing if it is not running. A restart starts right.
    pub fn skew_clock(&self, node_id: u64, offset_ms: i64) {
        if let Some(node) = self.node(node_id) {
            node.skew_clock(offset_ms);
        }
    }

    /// The acks any node of this cluster applied so far.
    pub fn applied_acks(&self) -> &Arc<AppliedAcks> {
        &self.inner.acks
    }

    /// The network: faults are set through it.
    pub fn net(&self) -> &Arc<FaultNet> {
        &self.inner.net
    }

    /// From now on, [`Cluster::kill`] records in `ledger` that the
    /// killed node's connections are gone, before anything else can
    /// requeue their messages (`NodeDown`, `NodeStarted`).
    pub fn attach_ledger(&self, ledger: Arc<Ledger>) {
        *self.inner.ledger.lock().unwrap_or_else(PoisonError::into_inner) = Some(ledger);
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self, node_id: u64, join: Vec<String>) -> NodeConfig {
        let options = &self.inner.options;
        NodeConfig {
            node_id,
            data_dir: std::path::PathBuf::from("unused-in-memory"),
            cluster_addr: node_addr(node_id),
            heartbeat_interval_ms: options.heartbeat_interval_ms,
            election_timeout_min_ms: options.election_timeout_min_ms,
            election_timeout_max_ms: options.election_timeout_max_ms,
            snapshot_every: options.snapshot_every,
            max_batch: options.max_batch,
            forward_timeout_ms: options.forward_timeout_ms,
            node_down_after_ms: options.node_down_after_ms,
            append_budget_bytes: options.append_budget_bytes,
            start_timeout_ms: WAIT_LIMIT.as_millis() as u64,
            join,
            ..NodeConfig::default()
        }
    }

    /// Ids of the nodes running now (faulted or not).
    pub fn running_ids(&self) -> Vec<u64> {
        self.slots()
            .iter()
            .filter(|(_, slot)| slot.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The running incarnation of `node_id`.
    pub fn handle(&self, node_id: u64) -> Option<NodeHandle> {
        self.slots().get(&node_id).and_then(|slot| {
            slot.running.as_ref().map(|r| NodeHandle {
                node: r.node.clone(),
                router: r.router.clone(),
                boot: r.boot,
            })
        })
    }

    /// The running node `node_id`.
    pub fn node(&self, node_id: u64) -> Option<Node> {
        self.handle(node_id).map(|h| h.node)
    }

    /// A connection id on `node_id`'s current incarnation, unique in this cluster.
    pub fn new_connection_id(&self, node_id: u64, boot: u64) -> ConnectionId {
        ConnectionId {
            node: NodeId(node_id),
            boot,
            seq: self.inner.next_conn.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The running node after `after` in id order (wrapping), or the first.
    pub fn next_running(&self, after: u64) -> Option<u64> {
        let ids = self.running_ids();
        ids.iter()
            .copied()
            .find(|id| *id > after)
            .or_else(|| ids.first().copied())
    }

    async fn start_new(&self, node_id: u64) -> Result<(), TestkitError> {
        let fs = self.inner.options.power_cut_storage.then(PowerCutFs::new);
        let store = match &fs {
            Some(fs) => open_segments(fs, node_id).await?,
            None => Arc::new(MemStore::new()),
        };
        let join: Vec<String> = self.running_ids().into_iter().map(node_addr).collect();
        self.slots().insert(
            node_id,
            Slot {
                store: store.clone(),
                fs,
                running: None,
                removed: false,
                incarnation: Arc::default(),
            },
        );
        self.run(node_id, store, join).await
    }

    /// Opens the node on `store`, makes it reachable, waits until it is
    /// ready, and proposes `NodeStarted` for its new boot (as the server does).
    async fn run(&self, node_id: u64, store: Arc<dyn LogStore>, join: Vec<String>) -> Result<(), TestkitError> {
        let net = &self.inner.net;
        let boot = net.random_in(1..u64::MAX);
        let router = Arc::new(Router::new(self.inner.acks.clone()));
        let mut config = self.config(node_id, join);
        if let Some(slot) = self.slots().get(&node_id) {
            config.incarnation = slot.incarnation.clone();
        }
        let runtime = Arc::new(NodeRuntime::start(node_id)?);
        let node = runtime
            .run(Node::open_with(
                config,
                store,
                net.endpoint(node_id),
                Arc::new(net.endpoint(node_id)),
                router.clone(),
            ))
            .await?
            .map_err(|e| TestkitError::new(format!("node {node_id} did not open: {e}")))?;
        net.register(node.clone());
        let ready = {
            let node = node.clone();
            runtime.run(async move { node.ready().await }).await?
        };
        if let Err(e) = ready {
            net.unregister(node_id);
            let _ = node.shutdown().await;
            return Err(TestkitError::new(format!("node {node_id} not ready: {e}")));
        }
        let started = Request {
            origin: None,
            command: Command::NodeStarted {
                node: NodeId(node_id),
                boot,
            },
        };
        node.proposer()
            .submit(started)
            .await
            .map_err(|e| TestkitError::new(format!("node {node_id}: {e}")))?;
        if let Some(slot) = self.slots().get_mut(&node_id) {
            let supervisor = self.supervise(node_id, boot, node.clone());
            slot.running = Some(Running {
                node,
                router,
                boot,
                runtime,
                supervisor,
            });
        }
        tracing::info!(node = node_id, boot, "node running");
        Ok(())
    }

    /// Crashes `node_id`: it drops off the network, its connections drop,
    /// Raft stops. On `power_cut_storage` its disk loses every write it had
    /// not synced (a torn tail drawn from the network's seed), as a
    /// process killed with its host would; on a `MemStore`, which is
    /// durable on write, it keeps everything. [`Cluster::restart`] brings
    /// it back on what its disk kept.
    ///
    /// # Errors
    /// The node is not running.
    pub async fn kill(&self, node_id: u64) -> Result<(), TestkitError> {
        let fs = {
            let slots = self.slots();
            let slot = slots
                .get(&node_id)
                .filter(|slot| slot.running.is_some())
                .ok_or_else(|| TestkitError::new(format!("node {node_id} is not running")))?;
            slot.fs.clone()
        };
        self.stand_down_supervisor(node_id);
        self.inner.net.unregister(node_id);
        if let Some(fs) = fs {
            let seed = self.inner.net.random_in(0..u64::MAX);
            fs.power_cut(seed);
            tracing::info!(node = node_id, seed, "crash: unsynced writes lost");
        }
        self.stop(node_id).await
    }

    /// Stops a running node whose disk is as the caller left it.
    async fn stop(&self, node_id: u64) -> Result<(), TestkitError> {
        let running = self
            .slots()
            .get_mut(&node_id)
            .and_then(|slot| slot.running.take())
            .ok_or_else(|| TestkitError::new(format!("node {node_id} is not running")))?;
        self.inner.net.unregister(node_id);
        let closed = running.router.close_all();
        let ledger = self.inner.ledger.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(ledger) = ledger {
            for conn in closed {
                ledger.record(Event::ChannelGone {
                    channel: ChannelId { conn, channel: CHANNEL },
                });
            }
        }
        running.supervisor.stand_down();
        running.runtime.resume();
        if let Err(e) = running.node.shutdown().await {
            tracing::warn!(node = node_id, error = %e, "shutdown failed");
        }
        // Ends whatever of the node still runs on its runtime.
        drop(running);
        tracing::info!(node = node_id, "node killed");
        Ok(())
    }

    /// Does what a node's supervisor (Kubernetes, systemd) does for the
    /// server, which exits when its Raft core stops on a fatal error:
    /// once boot `boot` of `node_id` reports one, the node is stopped
    /// (an exit: what it wrote stays on its disk) and started again.
    fn supervise(&self, node_id: u64, boot: u64, node: Node) -> Supervisor {
        let cluster = Arc::downgrade(&self.inner);
        let off = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stood_down = off.clone();
        let task = tokio::spawn(async move {
            let reason = node.fatal_error().await;
            // Apart from this task, which the stop aborts.
            tokio::spawn(async move {
                let Some(inner) = cluster.upgrade() else { return };
                if stood_down.load(Ordering::SeqCst) {
                    return;
                }
                let cluster = Cluster { inner };
                let current = cluster.handle(node_id).map(|handle| handle.boot);
                if current != Some(boot) {
                    return;
                }
                tracing::warn!(
                    node = node_id,
                    %reason,
                    "the Raft core stopped: restarting the node, as its supervisor would"
                );
                cluster.inner.fatal_restarts.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = cluster.stop(node_id).await {
                    tracing::warn!(node = node_id, error = %e, "stopping after a fatal error");
                    return;
                }
                // Again and again, as a supervisor does, while the node
                // cannot start (a disk that still fails).
                let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = cluster.restart(node_id).await {
                    cluster.inner.failed_restarts.fetch_add(1, Ordering::Relaxed);
                    if cluster.handle(node_id).is_some() || tokio::time::Instant::now() >= deadline {
                        tracing::error!(node = node_id, error = %e, "restart after a fatal error failed");
                        return;
                    }
                    tracing::warn!(node = node_id, error = %e, "restart after a fatal error failed; again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            });
        })
        .abort_handle();
        Supervisor { task, off }
    }

    /// Keeps the supervisor of `node_id`'s incarnation from restarting it:
    /// the test is about to stop it.
    fn stand_down_supervisor(&self, node_id: u64) {
        if let Some(running) = self.slots().get(&node_id).and_then(|slot| slot.running.as_ref()) {
            running.supervisor.stand_down();
        }
    }

    /// Makes every write and sync of `node_id`'s disk fail (`true`), as a
    /// broken disk's would, or mends it (`false`). Its Raft core stops on
    /// the first failed write; the node is then restarted, again and
    /// again until it starts (see [`Cluster::fatal_restarts`]).
    ///
    /// # Errors
    /// The cluster does not run on `power_cut_storage`, or there is no
    /// node `node_id`.
    pub fn fail_disk(&self, node_id: u64, failing: bool) -> Result<(), TestkitError> {
        let slots = self.slots();
        let fs = slots
            .get(&node_id)
            .ok_or_else(|| TestkitError::new(format!("no node {node_id}")))?
            .fs
            .as_ref()
            .ok_or_else(|| TestkitError::new("fail_disk needs ClusterOptions::power_cut_storage"))?;
        fs.fail_writes(failing);
        tracing::info!(node = node_id, failing, "disk");
        Ok(())
    }

    /// How many times a node was restarted because its Raft core stopped
    /// on a fatal error (openraft 0.9.25 can stop a leader's core on a
    /// replication stream it closed itself).
    pub fn fatal_restarts(&self) -> u64 {
        self.inner.fatal_restarts.load(Ordering::Relaxed)
    }

    /// How many of the starts tried after such a stop failed (the node's
    /// core stopped again before it was ready: a disk that still fails);
    /// the supervisor tries again after each.
    pub fn failed_restarts(&self) -> u64 {
        self.inner.failed_restarts.load(Ordering::Relaxed)
    }

    /// Pauses `node_id` as SIGSTOP would: every task of it stops where it
    /// is (its Raft core, timers, proposer); it stays on the network, so
    /// what is sent to it waits unanswered, and its clients wait too.
    /// [`Cluster::resume`] lets it go on, its timers late.
    ///
    /// # Errors
    /// The node is not running.
    pub fn pause(&self, node_id: u64) -> Result<(), TestkitError> {
        self.running_runtime(node_id)?.pause();
        tracing::info!(node = node_id, "paused");
        Ok(())
    }

    /// Lets a paused node go on.
    ///
    /// # Errors
    /// The node is not running.
    pub fn resume(&self, node_id: u64) -> Result<(), TestkitError> {
        let runtime = self.running_runtime(node_id)?;
        if runtime.is_paused() {
            runtime.resume();
            tracing::info!(node = node_id, "resumed");
        }
        Ok(())
    }

    fn running_runtime(&self, node_id: u64) -> Result<Arc<NodeRuntime>, TestkitError> {
        self.slots()
            .get(&node_id)
            .and_then(|slot| slot.running.as_ref())
            .map(|running| running.runtime.clone())
            .ok_or_else(|| TestkitError::new(format!("node {node_id} is not running")))
    }

    /// Cuts the power of `node_ids` at one moment: they drop off the
    /// network, then every write of theirs that was not synced is lost
    /// (torn tails chosen from `seed`), then they stop as a crash would.
    /// [`Cluster::restart`] brings each back on what its disk kept.
    ///
    /// # Errors
    /// The cluster does not run on `power_cut_storage`, or a node is not
    /// running.
    pub async fn power_cut(&self, node_ids: &[u64], seed: u64) -> Result<(), TestkitError> {
        let mut disks = Vec::new();
        for id in node_ids {
            let slots = self.slots();
            let slot = slots
                .get(id)
                .filter(|slot| slot.running.is_some())
                .ok_or_else(|| TestkitError::new(format!("node {id} is not running")))?;
            let fs = slot
                .fs
                .clone()
                .ok_or_else(|| TestkitError::new("power_cut needs ClusterOptions::power_cut_storage"))?;
            disks.push((*id, fs));
        }
        for (id, _) in &disks {
            self.stand_down_supervisor(*id);
            self.inner.net.unregister(*id);
        }
        for (id, fs) in &disks {
            fs.power_cut(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        for (id, _) in &disks {
            self.stop(*id).await?;
        }
        tracing::info!(nodes = ?node_ids, seed, "power cut");
        Ok(())
    }

    /// Replaces the disk of stopped node `node_id` with an empty one (a
    /// wiped or replaced volume); [`Cluster::restart`] then starts it on
    /// nothing, and a voter is refused (ADR 0022).
    ///
    /// # Errors
    /// The node runs or does not exist.
    pub async fn wipe(&self, node_id: u64) -> Result<(), TestkitError> {
        let fs = self.inner.options.power_cut_storage.then(PowerCutFs::new);
        let store = match &fs {
            Some(fs) => open_segments(fs, node_id).await?,
            None => Arc::new(MemStore::new()),
        };
        let mut slots = self.slots();
        let slot = slots
            .get_mut(&node_id)
            .filter(|slot| slot.running.is_none())
            .ok_or_else(|| TestkitError::new(format!("node {node_id} runs or does not exist")))?;
        slot.store = store;
        slot.fs = fs;
        tracing::info!(node = node_id, "disk wiped");
        Ok(())
    }

    /// Starts a removed node id again on an empty disk: it joins as a new
    /// member (the way back for a wiped node, ADR 0022).
    ///
    /// # Errors
    /// The node runs, or it did not join.
    pub async fn rejoin_as_new(&self, node_id: u64) -> Result<(), TestkitError> {
        self.wipe(node_id).await?;
        let store = {
            let mut slots = self.slots();
            let slot = slots
                .get_mut(&node_id)
                .ok_or_else(|| TestkitError::new(format!("no node {node_id}")))?;
            slot.removed = false;
            slot.store.clone()
        };
        let join = self.others(node_id);
        self.run(node_id, store, join).await
    }

    /// The addresses of the running nodes other than `node_id`: what it
    /// joins through.
    fn others(&self, node_id: u64) -> Vec<String> {
        self.running_ids()
            .into_iter()
            .filter(|id| *id != node_id)
            .map(node_addr)
            .collect()
    }

    /// Starts `node_id` again on the store it had (reopened from its disk
    /// with `power_cut_storage`), with a new boot id.
    ///
    /// # Errors
    /// The node is running, was removed, or did not become ready.
    pub async fn restart(&self, node_id: u64) -> Result<(), TestkitError> {
        let (store, fs) = {
            let slots = self.slots();
            let slot = slots
                .get(&node_id)
                .ok_or_else(|| TestkitError::new(format!("no node {node_id}")))?;
            if slot.running.is_some() || slot.removed {
                return Err(TestkitError::new(format!("node {node_id} is running or removed")));
            }
            (slot.store.clone(), slot.fs.clone())
        };
        let store = match fs {
            Some(fs) => {
                drop(store);
                let reopened = open_segments(&fs, node_id).await?;
                if let Some(slot) = self.slots().get_mut(&node_id) {
                    slot.store = reopened.clone();
                }
                reopened
            }
            None => store,
        };
        let join = self.others(node_id);
        self.run(node_id, store, join).await
    }

    /// Starts a new node (the next free id) that joins the cluster.
    ///
    /// # Errors
    /// It did not join.
    pub async fn add_node(&self) -> Result<u64, TestkitError> {
        let node_id = self.slots().keys().max().copied().unwrap_or(0) + 1;
        self.start_new(node_id).await?;
        Ok(node_id)
    }

    /// Stops `node_id` if it runs (a crash: its clients' connections are
    /// gone), removes it from the membership through the leader, and
    /// proposes `NodeDown` for it (the stand-in for the leader's failure
    /// detection: its connections' unacked messages go back).
    ///
    /// Stopped first, as RabbitMQ's `forget_cluster_node` wants it: a node
    /// removed while it runs is never told (it applies neither the
    /// `NodeDown` nor the membership without it), so its clients keep
    /// the deliveries the cluster has meanwhile given to others — the
    /// seeded schedules found it (seed 30000025, five nodes).
    ///
    /// # Errors
    /// No leader could make the change within the wait limit.
    pub async fn remove_node(&self, node_id: u64) -> Result<(), TestkitError> {
        if self.running_ids().contains(&node_id) {
            self.kill(node_id).await?;
        }
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let leader = self.leader().await?;
            let node = self
                .node(leader)
                .ok_or_else(|| TestkitError::new(format!("leader {leader} is not running")))?;
            match node.remove_node(node_id).await {
                Ok(_) => break,
                Err(e @ (PeerError::NotLeader { .. } | PeerError::Failed(_) | PeerError::Refused(_))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(TestkitError::new(format!("removing node {node_id}: {e}")));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some(slot) = self.slots().get_mut(&node_id) {
            slot.removed = true;
        }
        let leader = self.leader().await?;
        if let Some(node) = self.node(leader) {
            let down = Request {
                origin: None,
                command: Command::NodeDown { node: NodeId(node_id) },
            };
            node.proposer()
                .submit(down)
                .await
                .map_err(|e| TestkitError::new(format!("proposing NodeDown: {e}")))?;
        }
        tracing::info!(node = node_id, "node removed");
        Ok(())
    }

    /// The leader that a running node, not isolated nor paused, reports
    /// as itself being leader (a paused leader's report is frozen).
    ///
    /// # Errors
    /// None within the wait limit.
    pub async fn leader(&self) -> Result<u64, TestkitError> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let faults = self.inner.net.faults();
            let leader = self.running_ids().into_iter().find(|id| {
                !faults.isolated.contains(id)
                    && !self.running_runtime(*id).is_ok_and(|runtime| runtime.is_paused())
                    && self.node(*id).is_some_and(|node| node.metrics().is_leader)
            });
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TestkitError::new("no leader elected"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every running node has applied the same last index as
    /// the leader's log and stays there, then checks that all their
    /// broker states are equal and satisfy the invariants. Call it once
    /// the faults are healed. Returns the common applied index.
    ///
    /// # Errors
    /// The nodes did not converge within the wait limit, a state differs,
    /// or an invariant is broken.
    pub async fn converge(&self) -> Result<u64, TestkitError> {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        let mut last_problem = String::new();
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(TestkitError::new(format!("nodes did not converge: {last_problem}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let nodes: Vec<(u64, Node)> = self
                .running_ids()
                .into_iter()
                .filter_map(|id| self.node(id).map(|n| (id, n)))
                .collect();
            let statuses: Vec<_> = nodes.iter().map(|(_, n)| n.metrics()).collect();
            let Some(leader) = statuses.iter().find(|s| s.is_leader) else {
                last_problem = "no leader".to_owned();
                continue;
            };
            let target = leader.last_log_index;
            if let Some(lagging) = statuses.iter().find(|s| s.last_applied != target) {
                last_problem = format!(
                    "node {} applied {:?}, leader {} has {target:?}",
                    lagging.node_id, lagging.last_applied, leader.node_id
                );
                continue;
            }
            let states: Vec<(u64, Broker)> = nodes.iter().map(|(id, n)| (*id, n.read(Broker::clone))).collect();
            // The states are comparable only if nothing was applied meanwhile.
            if nodes.iter().any(|(_, n)| n.metrics().last_applied != target) {
                last_problem = "still applying".to_owned();
                continue;
            }
            let index = target.unwrap_or(0);
            for (id, broker) in &states {
                broker
                    .check_invariants()
                    .map_err(|e| TestkitError::new(format!("node {id} at index {index}: invariant broken: {e}")))?;
            }
            // Compared with every body in place of its node-local handle.
            let mut portable = Vec::new();
            for (id, node) in &nodes {
                // Reads bodies from disk: off the runtime's threads.
                let node = node.clone();
                let bytes = tokio::task::spawn_blocking(move || node.portable_state())
                    .await
                    .map_err(|e| TestkitError::new(format!("node {id}: {e}")))?
                    .map_err(|e| TestkitError::new(format!("node {id} at index {index}: {e}")))?;
                portable.push(bytes);
            }
            if nodes.iter().any(|(_, n)| n.metrics().last_applied != target) {
                last_problem = "still applying".to_owned();
                continue;
            }
            if let Some(other) = portable.iter().position(|bytes| bytes != &portable[0]) {
                let (first_id, first) = &states[0];
                let (other_id, theirs) = &states[other];
                return Err(TestkitError::new(format!(
                    "states differ at index {index}: node {first_id} and node {other_id}:\n{}",
                    first_difference(first, theirs)
                )));
            }
            return Ok(index);
        }
    }

    /// Stops every running node.
    pub async fn shutdown(&self) {
        for id in self.running_ids() {
            let _ = self.kill(id).await;
        }
    }
}

/// Opens node `node_id`'s segment store on `fs` (off the runtime: it reads
/// every segment).
async fn open_segments(fs: &PowerCutFs, node_id: u64) -> Result<Arc<dyn LogStore>, TestkitError> {
    let fs = fs.clone();
    let config = SegmentConfig {
        segment_bytes: POWER_CUT_SEGMENT_BYTES,
        // Small body segments and cache, so deliveries read bodies back
        // from the (power-cut) disk and segments come and go.
        bodies: warren_store::BodyConfig {
            segment_bytes: POWER_CUT_SEGMENT_BYTES,
            cache_bytes: 1024,
        },
        ..SegmentConfig::default()
    };
    let dir = std::path::PathBuf::from(format!("/node-{node_id}"));
    let opened = tokio::task::spawn_blocking(move || SegmentStore::open_on(Arc::new(fs), &dir, &config))
        .await
        .map_err(|e| TestkitError::new(format!("node {node_id}: opening its store panicked: {e}")))?;
    let store = opened.map_err(|e| TestkitError::new(format!("node {node_id}: its store did not open: {e}")))?;
    Ok(Arc::new(store))
}

/// Where two brokers' pretty debug forms first part, with a few lines of
/// each around it: what a convergence failure needs to be read.
fn first_difference(ours: &Broker, theirs: &Broker) -> String {
    let ours = format!("{ours:#?}");
    let theirs = format!("{theirs:#?}");
    let ours: Vec<&str> = ours.lines().collect();
    let theirs: Vec<&str> = theirs.lines().collect();
    let at = ours
        .iter()
        .zip(&theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let from = at.saturating_sub(12);
    let show = |lines: &[&str]| {
        lines
            .iter()
            .skip(from)
            .take(at + 6 - from)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at line {at} of the debug form\n--- first:\n{}\n--- other:\n{}",
        show(&ours),
        show(&theirs)
    )
}
