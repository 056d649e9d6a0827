//! A Warren Raft node: storage, openraft, state machine, proposer and tick
//! driver, assembled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, Raft, ServerState};
use tokio::task::JoinHandle;
use warren_core::{Broker, Effect};
use warren_store::{LogStore, SledConfig, SledStore};

use crate::config::NodeConfig;
use crate::error::ClusterError;
use crate::log_store::RaftLogStore;
use crate::network::UnreachableNetwork;
use crate::proposer::{Proposer, ProposerTask};
use crate::state_machine::{ProposalTracker, Shared, StateMachine};
use crate::tick;
use crate::type_config::TypeConfig;

/// Receives, after each applied entry, the effects addressed to this node
/// (`effect.channel().conn.node == own id`), in apply order — including
/// during the replay after a restart, when they address connections of an
/// earlier boot and should be dropped.
///
/// `emit` runs on the apply path: it must not block (push into bounded
/// per-connection queues, `try_send`, and deal with full queues without
/// waiting).
pub trait EffectSink: Send + Sync + 'static {
    fn emit(&self, effects: Vec<Effect>);
}

/// A snapshot of the node's Raft state, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last log index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index purged from the log.
    pub purged_index: Option<u64>,
    /// Voters and learners of the current membership, with their addresses.
    pub members: BTreeMap<u64, String>,
}

struct Inner {
    node_id: u64,
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    proposer: Proposer,
    store: Arc<dyn LogStore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tick driver holds a `Proposer`, which would keep the proposer
        // task (and through it Raft) alive after the last `Node` is gone.
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks.iter().skip(1) {
            task.abort();
        }
    }
}

/// A running Raft node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the sled store in `config.data_dir`, starts openraft, and — if
    /// the store is empty — initializes a one-member cluster of this node.
    ///
    /// Returns once this node is leader and has applied everything in its
    /// log (the replay after a restart included), so the caller can propose
    /// `NodeStarted` and read a current state right away.
    ///
    /// # Errors
    /// The store cannot be opened, Raft cannot start, or the node did not
    /// become ready within `config.start_timeout_ms`.
    pub async fn start(config: NodeConfig, sink: Arc<dyn EffectSink>) -> Result<Node, ClusterError> {
        let data_dir = config.data_dir.clone();
        let sled_config = SledConfig {
            cache_capacity_bytes: config.cache_capacity_bytes,
            ..SledConfig::default()
        };
        let store = tokio::task::spawn_blocking(move || SledStore::open(&data_dir, &sled_config))
            .await
            .map_err(|e| ClusterError::Join(e.to_string()))??;
        Self::start_with(config, Arc::new(store), UnreachableNetwork, sink).await
    }

    /// [`Node::start`] on a given store (e.g. `MemStore` in tests).
    ///
    /// # Errors
    /// As for [`Node::start`].
    pub async fn start_with_store(
        config: NodeConfig,
        store: Arc<dyn LogStore>,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Node, ClusterError> {
        Self::start_with(config, store, UnreachableNetwork, sink).await
    }

    /// [`Node::start`] on a given store and Raft network.
    ///
    /// # Errors
    /// As for [`Node::start`].
    pub async fn start_with<N: RaftNetworkFactory<TypeConfig>>(
        config: NodeConfig,
        store: Arc<dyn LogStore>,
        network: N,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Node, ClusterError> {
        let node_id = config.node_id;
        let raft_config = Arc::new(config.raft_config().map_err(|e| ClusterError::Config(e.to_string()))?);
        let tracker = Arc::new(ProposalTracker::new(node_id));
        let log_store = RaftLogStore::open(store.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let state_machine = StateMachine::open_with_tracker(store.clone(), sink.clone(), tracker.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let shared = state_machine.shared();
        let raft = Raft::new(node_id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized {
            tracing::info!(node = node_id, addr = %config.cluster_addr, "empty store: bootstrapping a one-member cluster");
            let members = BTreeMap::from([(node_id, BasicNode::new(config.cluster_addr.clone()))]);
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        wait_until_ready(&raft, node_id, &config).await?;

        let (proposer, proposer_task) = ProposerTask {
            raft: raft.clone(),
            tracker,
            sink,
            max_batch: config.max_batch,
            max_in_flight: config.max_batches_in_flight,
        }
        .spawn();
        let tick_task = tick::spawn(node_id, raft.clone(), shared.clone(), proposer.clone());
        tracing::info!(node = node_id, "raft node ready");
        Ok(Node {
            inner: Arc::new(Inner {
                node_id,
                raft,
                shared,
                proposer,
                store,
                tasks: Mutex::new(vec![proposer_task, tick_task]),
            }),
        })
    }

    /// A handle to submit requests.
    pub fn proposer(&self) -> Proposer {
        self.inner.proposer.clone()
    }

    /// Runs `f` on this replica's current broker state. The read lock is
    /// held only while `f` runs: keep it short and never await inside.
    /// Not linearizable: on a follower the state may lag the leader.
    pub fn read<R>(&self, f: impl FnOnce(&Broker) -> R) -> R {
        f(&self.inner.shared.read().broker)
    }

    /// Runs `f` on a state at least as new as every entry committed before
    /// this call (openraft's linearizable read: the leader confirms its
    /// leadership with a quorum, then waits until it has applied that far).
    /// For reads that must be current, e.g. `queue.declare` passive counts.
    ///
    /// # Errors
    /// [`ClusterError::Raft`] if this node is not the leader (forwarding the
    /// read is the RPC layer's job) or Raft stopped.
    pub async fn read_linearizable<R>(&self, f: impl FnOnce(&Broker) -> R) -> Result<R, ClusterError> {
        self.inner
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(self.read(f))
    }

    /// The node's Raft state as openraft last reported it.
    pub fn metrics(&self) -> NodeStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        NodeStatus {
            node_id: self.inner.node_id,
            leader: metrics.current_leader,
            is_leader: metrics.state == ServerState::Leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            members: metrics
                .membership_config
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        }
    }

    /// Bytes the store occupies on disk (0 for an in-memory store).
    pub async fn store_size_on_disk(&self) -> u64 {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.size_on_disk())
            .await
            .unwrap_or(0)
    }

    /// The openraft handle, for the RPC layer (append, vote, snapshot) and
    /// membership changes.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Stops the tick driver and Raft. Requests submitted afterwards, and
    /// batches still in flight, get `Unavailable` replies.
    ///
    /// # Errors
    /// Raft's core task failed while stopping.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks.iter().skip(1) {
            // The tick driver; the proposer (first) keeps running and answers
            // `Unavailable` until every `Proposer` handle is dropped.
            task.abort();
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        tracing::info!(node = self.inner.node_id, "raft node stopped");
        Ok(())
    }
}

/// Waits until this node is leader and has applied an entry of its own
/// term — the blank entry every new leader commits — which means it has
/// applied everything in its log.
async fn wait_until_ready(raft: &Raft<TypeConfig>, node_id: u64, config: &NodeConfig) -> Result<(), ClusterError> {
    let ready = raft
        .wait(Some(config.start_timeout()))
        .metrics(
            |m| {
                m.state == ServerState::Leader
                    && m.current_leader == Some(node_id)
                    && m.last_applied.is_some_and(|applied| {
                        applied.leader_id.term == m.current_term && Some(applied.index) >= m.last_log_index
                    })
            },
            "leader with its log applied",
        )
        .await;
    match ready {
        Ok(_) => Ok(()),
        Err(e) => Err(ClusterError::StartTimeout {
            node: node_id,
            timeout_ms: config.start_timeout_ms,
            reason: e.to_string(),
        }),
    }
}
