//! A Warren Raft node: storage, openraft, state machine, proposer and tick
//! driver, assembled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::effect_sink::EffectSink;
use crate::Member;
use openraft::error::{ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::{ChangeMembers, Raft, ServerState};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use warren_core::Broker;
use warren_store::{open_data_dir, LogStore, SegmentConfig, SledConfig};

use crate::config::NodeConfig;
use crate::error::ClusterError;
use crate::handover::NotCommitted;
use crate::liveness::{Contacts, Detector, TrackingNetwork};
use crate::log_store::RaftLogStore;
use crate::network::UnreachableNetwork;
use crate::peers::{JoinMode, NoPeers, PeerError, Peers};
use crate::proposer::{Proposer, ProposerTask};
use crate::state_machine::{Shared, StateMachine};
use crate::tracker::ProposalTracker;
use crate::type_config::{Proposal, TypeConfig};
use crate::{compaction, tick};

/// How many forwarded batches a leader writes at once (each follower's
/// proposer forwards at most its batches in flight, so this is room for
/// dozens of followers).
const MAX_FORWARDED_IN_FLIGHT: usize = 256;

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

/// A member as [`Node::member_status`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    /// `None`: it did not answer; `Some(None)`: it answered and has
    /// applied nothing yet.
    pub applied: Option<Option<u64>>,
}

struct Inner {
    node_id: u64,
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    proposer: Proposer,
    store: Arc<dyn LogStore>,
    peers: Arc<dyn Peers>,
    config: NodeConfig,
    /// The time stamped into every batch this node writes as leader.
    clock: Arc<crate::clock::LeaderClock>,
    /// One membership change (join, leave) at a time: openraft refuses a
    /// change while another is in progress.
    membership_changes: Semaphore,
    /// Bounds the forwarded batches handed to openraft at once (its API
    /// channel is unbounded): more wait.
    forwarded: Semaphore,
    /// The store was empty when the node opened (no log, no vote).
    fresh: bool,
    /// Whether openraft's messages (append, vote, snapshot) are taken. A
    /// fresh node takes none until it bootstrapped or the leader agreed it
    /// joins as a new member (ADR 0022): a wiped voter must not vote.
    admitted: AtomicBool,
    /// Whether deliveries may go to clients now (ADR 0028).
    fence: Arc<crate::fence::DeliveryFence>,
    /// Whether this node may stand for election at all
    /// ([`Node::allow_elections`]); the leader watch asks it too.
    elections_allowed: Arc<AtomicBool>,
    /// Which members answered and accepted this node's Raft requests, when.
    contacts: Arc<Contacts>,
    /// Held while this leader hands its leadership over (ADR 0035).
    hold: Arc<crate::handover::WriteHold>,
    /// Since when this node leads (a hand-over waits out its lease).
    leading_since: Arc<crate::handover::LeadingSince>,
    /// Background tasks aborted on shutdown or drop: the tick driver, the
    /// failure detector, compaction and (after a restart) the election
    /// hold. Not the proposer: it keeps running and answers `Unavailable`
    /// until every `Proposer` handle is dropped, then ends by itself.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tick driver holds a `Proposer`, which would keep the proposer
        // task (and through it Raft) alive after the last `Node` is gone.
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in &tasks {
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
    /// Returns once the node is ready (see [`Node::ready`]): here, with no
    /// peers, once it is leader and has applied everything in its log (the
    /// replay after a restart included), so the caller can propose
    /// `NodeStarted` and read a current state right away.
    ///
    /// # Errors
    /// The store cannot be opened, Raft cannot start, or the node did not
    /// become ready within `config.start_timeout_ms`.
    pub async fn start(config: NodeConfig, sink: Arc<dyn EffectSink>) -> Result<Node, ClusterError> {
        let node = Self::open(config, UnreachableNetwork, Arc::new(NoPeers), sink).await?;
        node.ready().await?;
        Ok(node)
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

    /// [`Node::start`] on a given store and Raft network, without peers to
    /// forward to or join through.
    ///
    /// # Errors
    /// As for [`Node::start`].
    pub async fn start_with<N: RaftNetworkFactory<TypeConfig>>(
        config: NodeConfig,
        store: Arc<dyn LogStore>,
        network: N,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Node, ClusterError> {
        let node = Self::open_with(config, store, network, Arc::new(NoPeers), sink).await?;
        node.ready().await?;
        Ok(node)
    }

    /// Opens the store in `config.data_dir` (the segment engine; sled for a
    /// directory sled wrote) and starts the node on it
    /// (see [`Node::open_with`]).
    ///
    /// # Errors
    /// As for [`Node::open_with`], and the store cannot be opened.
    pub async fn open<N: RaftNetworkFactory<TypeConfig>>(
        config: NodeConfig,
        network: N,
        peers: Arc<dyn Peers>,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Node, ClusterError> {
        let data_dir = config.data_dir.clone();
        let sled_config = SledConfig {
            cache_capacity_bytes: config.cache_capacity_bytes,
            ..SledConfig::default()
        };
        let store =
            tokio::task::spawn_blocking(move || open_data_dir(&data_dir, &sled_config, &SegmentConfig::default()))
                .await
                .map_err(|e| ClusterError::Join(e.to_string()))??;
        Self::open_with(config, store, network, peers, sink).await
    }

    /// Starts openraft, the proposer and the tick driver on `store`, and
    /// returns without waiting for the node to be ready, so the caller can
    /// start serving Raft RPCs (which need the returned handle) before
    /// calling [`Node::ready`].
    ///
    /// An empty store with an empty `config.join` bootstraps a one-member
    /// cluster; with a non-empty `join` it stays uninitialized until the
    /// leader replicates to it ([`Node::ready`] asks to join).
    ///
    /// # Errors
    /// The store cannot be read or Raft cannot start.
    pub async fn open_with<N: RaftNetworkFactory<TypeConfig>>(
        config: NodeConfig,
        store: Arc<dyn LogStore>,
        network: N,
        peers: Arc<dyn Peers>,
        sink: Arc<dyn EffectSink>,
    ) -> Result<Node, ClusterError> {
        let node_id = config.node_id;
        let raft_config = Arc::new(config.raft_config().map_err(|e| ClusterError::Config(e.to_string()))?);
        let tracker = Arc::new(ProposalTracker::new(node_id));
        let mut log_store = RaftLogStore::open(store.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let state_machine =
            StateMachine::open_with_tracker(store.clone(), sink.clone(), tracker.clone(), config.cluster_id.clone())
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let shared = state_machine.shared();
        log_store.count_into(shared.counters.clone());
        let appended_bytes = log_store.appended_bytes();
        let contacts = Arc::new(Contacts::default());
        let network = TrackingNetwork {
            inner: network,
            contacts: contacts.clone(),
            append_budget: config.append_budget_bytes,
        };
        shared.raft_opening.store(true, Ordering::SeqCst);
        let raft = Raft::new(node_id, raft_config, network, log_store, state_machine).await;
        shared.raft_opening.store(false, Ordering::SeqCst);
        let raft = raft.map_err(|e| ClusterError::Raft(e.to_string()))?;
        // What this node applied was committed: the commit index starts
        // there (openraft reports commits only as new ones happen).
        if let Some(applied) = raft.metrics().borrow().last_applied {
            shared.counters.committed(applied.index);
        }

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let recorded = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node_id)
            .map(|member| member.incarnation)
            .filter(|&incarnation| incarnation != 0);
        // Reads and may write (and fsync) the incarnation file: off the runtime.
        let cell = config.incarnation.clone();
        let settled = tokio::task::spawn_blocking(move || cell.settle(node_id, !initialized, recorded))
            .await
            .map_err(|e| ClusterError::Join(e.to_string()))
            .and_then(|settled| settled);
        let incarnation = match settled {
            Ok(incarnation) => incarnation,
            Err(refused) => {
                let _ = raft.shutdown().await;
                return Err(refused);
            }
        };
        tracing::info!(
            node = node_id,
            incarnation = format!("{incarnation:016x}"),
            "incarnation"
        );
        let bootstrap = !initialized && config.join.is_empty();
        if bootstrap {
            initialize_alone(&raft, node_id, &config.cluster_addr, incarnation).await?;
        }

        let elections_allowed = Arc::new(AtomicBool::new(true));
        let mut tasks = Vec::new();
        if initialized
            && raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count()
                > 1
        {
            tasks.push(hold_elections_until_a_leader_is_heard(
                &raft,
                elections_allowed.clone(),
                Duration::from_millis(config.election_timeout_max_ms.saturating_mul(4)),
            ));
        }

        let clock = Arc::new(crate::clock::LeaderClock::with_floor(shared.clock_floor_ms.clone()));
        let hold = crate::handover::WriteHold::new();
        let (leading_since, leading_since_task) = crate::handover::LeadingSince::spawn(&raft, node_id);
        // The proposer's handle is dropped: the task ends by itself once the
        // last `Proposer` is gone (see `Inner::tasks`).
        let (proposer, _proposer_task) = ProposerTask {
            raft: raft.clone(),
            tracker,
            sink,
            peers: peers.clone(),
            counters: shared.counters.clone(),
            clock: clock.clone(),
            max_batch: config.max_batch,
            max_batch_bytes: config.max_batch_bytes,
            max_in_flight: config.max_batches_in_flight,
            forward_timeout: config.forward_timeout(),
            leader_wait: Duration::from_millis(config.election_timeout_max_ms.saturating_mul(4)),
            hold: hold.clone(),
        }
        .spawn();
        let tick_task = tick::spawn(node_id, raft.clone(), shared.clone(), proposer.clone(), clock.clone());
        let compaction_task =
            compaction::spawn(raft.clone(), appended_bytes, shared.clone(), config.snapshot_log_bytes);
        let detector_task = Detector {
            node_id,
            raft: raft.clone(),
            contacts: contacts.clone(),
            down_after: Duration::from_millis(config.node_down_after_ms.max(1)),
            clock: clock.clone(),
            hold: hold.clone(),
        }
        .spawn();
        let fence = Arc::new(crate::fence::DeliveryFence::new(config.node_down_after_ms));
        let leader_watch_task = crate::leader_watch::LeaderWatch {
            node_id,
            raft: raft.clone(),
            fence: fence.clone(),
            elections_allowed: elections_allowed.clone(),
            peers: peers.clone(),
            lease_ms: config.election_timeout_max_ms,
            heartbeat_ms: config.heartbeat_interval_ms,
        }
        .spawn();
        Ok(Node {
            inner: Arc::new(Inner {
                node_id,
                raft,
                shared,
                proposer,
                store,
                peers,
                config,
                clock,
                membership_changes: Semaphore::new(1),
                forwarded: Semaphore::new(MAX_FORWARDED_IN_FLIGHT),
                fence,
                elections_allowed,
                contacts,
                hold,
                leading_since,
                fresh: !initialized,
                admitted: AtomicBool::new(initialized || bootstrap),
                tasks: Mutex::new({
                    tasks.extend([
                        tick_task,
                        detector_task,
                        compaction_task,
                        leader_watch_task,
                        leading_since_task,
                    ]);
                    tasks
                }),
            }),
        })
    }

    /// Waits until the node can serve clients: it joined the cluster if it
    /// had to (`config.join` set and this node not a voter yet: asks the
    /// members in turn, with backoff, until one leader adds it), a leader is
    /// known, and this node has applied at least as far as the leader had
    /// when asked — or it is the leader and has applied its whole log.
    ///
    /// # Errors
    /// [`ClusterError::StartTimeout`] if that did not happen within
    /// `config.start_timeout_ms`; [`ClusterError::Raft`] at once if the
    /// Raft core stops meanwhile (a disk that fails its writes): waiting
    /// out the timeout would only delay the exit and the restart.
    pub async fn ready(&self) -> Result<(), ClusterError> {
        tokio::select! {
            ready = self.become_ready() => ready,
            reason = self.fatal_error() => Err(self.stopped_before_ready(&reason)),
        }
    }

    async fn become_ready(&self) -> Result<(), ClusterError> {
        let config = &self.inner.config;
        let deadline = tokio::time::Instant::now() + config.start_timeout();
        let mut min_applied = None;
        if !config.join.is_empty() && !self.is_voter() {
            min_applied = self.enter_cluster(deadline).await?;
        }
        self.wait_until_caught_up(deadline, min_applied).await?;
        tracing::info!(node = self.inner.node_id, "raft node ready");
        Ok(())
    }

    /// Whether `node_id` is in the membership as this node sees it.
    fn is_member(&self, node_id: u64) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let member = metrics.membership_config.membership().get_node(&node_id).is_some();
        member
    }

    fn is_voter(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let is_voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.inner.node_id);
        is_voter
    }

    fn stopped_before_ready(&self, reason: &str) -> ClusterError {
        ClusterError::Raft(format!(
            "the Raft core stopped before node {} was ready: {reason}",
            self.inner.node_id
        ))
    }

    fn timeout(&self, reason: impl Into<String>) -> ClusterError {
        ClusterError::StartTimeout {
            node: self.inner.node_id,
            timeout_ms: self.inner.config.start_timeout_ms,
            reason: reason.into(),
        }
    }

    /// Whether this node takes openraft's messages (append, vote, snapshot).
    /// A node that opened on an empty store takes none until it has
    /// bootstrapped, or the leader agreed that it joins as a new member:
    /// a voter whose data directory was wiped must not vote, nor
    /// acknowledge entries, without the log it acknowledged before (ADR
    /// 0022).
    pub fn takes_raft_messages(&self) -> bool {
        self.inner.admitted.load(Ordering::Acquire)
    }

    /// This node's incarnation (ADR 0033).
    pub fn incarnation(&self) -> u64 {
        self.inner.config.incarnation.get()
    }

    /// Refuses a Raft message that the caller's membership meant for
    /// another node (`to_node`: an address now answered by another member)
    /// or another incarnation of this one (`to_incarnation`: this node's
    /// data directory is not the one the caller's membership counts on).
    /// 0 means unknown and is not checked (a caller or a membership from
    /// before incarnations).
    ///
    /// The caller's own incarnation is not checked against this node's
    /// membership: a follower whose membership lags would then refuse a
    /// leader that rejoined as a new incarnation, and never catch up.
    ///
    /// # Errors
    /// Why the message is not for this node.
    pub fn check_callee(&self, from_node: u64, to_node: u64, to_incarnation: u64) -> Result<(), String> {
        let node_id = self.inner.node_id;
        if to_node != 0 && to_node != node_id {
            return Err(format!(
                "node {from_node} sent node {to_node} a Raft message at this address, but this is node {node_id}"
            ));
        }
        let own = self.incarnation();
        if to_incarnation != 0 && own != 0 && to_incarnation != own {
            return Err(format!(
                "node {from_node} sent a Raft message to incarnation {to_incarnation:016x} of node {node_id}; \
                 this is incarnation {own:016x} (its data directory is not the one that membership counts on)"
            ));
        }
        Ok(())
    }

    /// Makes this node a member through `config.join`. Returns the log
    /// index the node must apply before it is ready (`None`: it
    /// bootstrapped).
    ///
    /// A node with a log rejoins. A fresh one first asks whether it may
    /// join as new (refused, for good, when its id is a voter: it was
    /// wiped), only then takes Raft messages, then joins. A fresh seed
    /// bootstraps instead if every other listed member answers that it is
    /// in no cluster, and joins if any is (its own volume was wiped).
    async fn enter_cluster(&self, deadline: tokio::time::Instant) -> Result<Option<u64>, ClusterError> {
        if !self.inner.fresh {
            return self.join_cluster(deadline, JoinMode::Rejoin).await.map(Some);
        }
        if self.inner.config.seed && !self.a_listed_member_is_in_a_cluster(deadline).await? {
            let config = &self.inner.config;
            initialize_alone(
                &self.inner.raft,
                self.inner.node_id,
                &config.cluster_addr,
                config.incarnation.get(),
            )
            .await?;
            self.inner.admitted.store(true, Ordering::Release);
            return Ok(None);
        }
        self.join_cluster(deadline, JoinMode::CheckFresh).await?;
        self.inner.admitted.store(true, Ordering::Release);
        self.join_cluster(deadline, JoinMode::Fresh).await.map(Some)
    }

    /// Asks every member in `config.join` whether it is in a cluster,
    /// until one says yes (`true`) or all have said no (`false`). Members
    /// that do not answer are asked again: a seed does not bootstrap on
    /// silence, which may be a cluster it cannot reach yet.
    async fn a_listed_member_is_in_a_cluster(&self, deadline: tokio::time::Instant) -> Result<bool, ClusterError> {
        let node_id = self.inner.node_id;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut silent = Vec::new();
            for member in &self.inner.config.join {
                match self.inner.peers.in_a_cluster(member).await {
                    Ok(true) => {
                        tracing::info!(node = node_id, %member, "empty store: a listed member is in a cluster; joining it");
                        return Ok(true);
                    }
                    Ok(false) => {}
                    Err(e) => silent.push(format!("{member}: {e}")),
                }
            }
            if silent.is_empty() {
                tracing::info!(
                    node = node_id,
                    "empty store and no listed member is in a cluster: bootstrapping"
                );
                return Ok(false);
            }
            tracing::warn!(
                node = node_id,
                ?silent,
                "empty store: waiting for every listed member to answer before bootstrapping"
            );
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(self.timeout(format!(
                    "a seed on an empty store bootstraps only once every member of its join list answered; silent: {}",
                    silent.join("; ")
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Asks the members in `config.join` (following leader hints) to add
    /// this node as a voter (`mode` says whether it has a log). Returns the
    /// log index of that membership.
    async fn join_cluster(&self, deadline: tokio::time::Instant, mode: JoinMode) -> Result<u64, ClusterError> {
        let config = &self.inner.config;
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::from("no member answered");
        loop {
            if self.is_voter() {
                // Someone else added this node (`warren ctl add-node`).
                let metrics = self.inner.raft.metrics();
                let index = metrics.borrow().membership_config.log_id().map_or(0, |id| id.index);
                tracing::info!(node = self.inner.node_id, log_index = index, "already a voter");
                return Ok(index);
            }
            for via in &config.join {
                let mut target = via.clone();
                // A member that is not the leader names the leader; follow a few hints.
                for _hop in 0..3 {
                    tracing::info!(node = self.inner.node_id, via = %target, "asking to join the cluster");
                    match self
                        .inner
                        .peers
                        .join(
                            &target,
                            self.inner.node_id,
                            &config.cluster_addr,
                            config.incarnation.get(),
                            mode,
                        )
                        .await
                    {
                        Ok(index) => {
                            tracing::info!(node = self.inner.node_id, log_index = index, ?mode, "the leader agreed");
                            return Ok(index);
                        }
                        Err(PeerError::Refused(reason)) => {
                            return Err(ClusterError::Refused {
                                node: self.inner.node_id,
                                reason,
                            })
                        }
                        Err(PeerError::NotLeader {
                            leader_addr: Some(leader),
                            ..
                        }) if leader != target => target = leader,
                        Err(e) => {
                            tracing::warn!(node = self.inner.node_id, via = %target, error = %e, "join attempt failed");
                            last_error = format!("join through {target}: {e}");
                            break;
                        }
                    }
                }
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(self.timeout(last_error));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// See [`Node::ready`]: a leader is known and this node has applied an
    /// entry of the leader's term; then, on a follower, as far as the
    /// leader had applied when asked (and `min_applied`).
    ///
    /// A check that cannot pass yet waits for the metrics to change before
    /// it looks again. It once looked again at once: a restarted leader
    /// whose core then stopped (a failing disk) kept its own vote, so it
    /// saw itself as the known leader, not in the `Leader` state, forever —
    /// a loop with no await in it, which on a node's one-thread runtime
    /// (the testkit's) starved everything else, the watch for the core's
    /// fatal error included (and would spin a worker of the server's).
    async fn wait_until_caught_up(
        &self,
        deadline: tokio::time::Instant,
        min_applied: Option<u64>,
    ) -> Result<(), ClusterError> {
        let raft = &self.inner.raft;
        let node_id = self.inner.node_id;
        let mut watch = raft.metrics();
        let mut look_again_at_once = true;
        loop {
            if !look_again_at_once {
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Err(_) => return Err(self.timeout("no leader known with an entry of its term applied")),
                    Ok(Err(_)) => return Err(self.stopped_before_ready("its metrics ended")),
                    Ok(Ok(())) => {}
                }
            }
            look_again_at_once = false;
            let metrics = watch.borrow_and_update().clone();
            if let Err(fatal) = &metrics.running_state {
                return Err(self.stopped_before_ready(&fatal.to_string()));
            }
            let Some(leader) = metrics.current_leader else { continue };
            let applied_in_term = metrics.last_applied.is_some_and(|applied| {
                applied.leader_id.term == metrics.current_term && Some(applied.index) >= min_applied
            });
            if !applied_in_term {
                continue;
            }
            let target = if leader == node_id {
                if metrics.state != ServerState::Leader {
                    continue;
                }
                metrics.last_log_index
            } else {
                let Some(addr) = metrics
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|n| n.addr.clone())
                else {
                    continue;
                };
                match self.inner.peers.applied_index(&addr).await {
                    Ok(index) => index,
                    Err(e) => {
                        tracing::debug!(node = node_id, leader, error = %e, "cannot ask the leader how far it applied");
                        if tokio::time::Instant::now() >= deadline {
                            return Err(self.timeout(format!("cannot reach leader {leader}: {e}")));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        look_again_at_once = true;
                        continue;
                    }
                }
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            raft.wait(Some(remaining))
                .metrics(
                    |m| m.running_state.is_err() || m.last_applied.map(|id| id.index) >= target,
                    "applied as far as the leader",
                )
                .await
                .map_err(|e| self.timeout(e.to_string()))
                .and_then(|m| match m.running_state {
                    Err(fatal) => Err(self.stopped_before_ready(&fatal.to_string())),
                    Ok(()) => Ok(()),
                })?;
            return Ok(());
        }
    }

    /// Sets this node's clock `offset_ms` off the wall clock: a fault
    /// test's clock skew (0 puts it right). Only what this node writes to
    /// the log while it leads carries its clock; a follower's is never
    /// read by the others.
    pub fn skew_clock(&self, offset_ms: i64) {
        self.inner.clock.set_offset_ms(offset_ms);
    }

    /// Whether this node may start an election: off, neither openraft's
    /// election timer nor the leader watch (which asks openraft for an
    /// election when the leader's process is gone, ADR 0029) makes it a
    /// candidate. It still votes, and it leads on if it leads now. For a
    /// node that must not take leadership meanwhile (a fault test's node
    /// whose clock is off; a node being drained).
    pub fn allow_elections(&self, on: bool) {
        self.inner.elections_allowed.store(on, Ordering::SeqCst);
        self.inner.raft.runtime_config().elect(on);
    }

    /// Hands this node's leadership to a voter that holds its whole log,
    /// within `limit` (ADR 0035): a node about to stop calls this so that
    /// its followers need not wait out an election timeout. Meanwhile this
    /// node proposes nothing; writes wait and then go to the new leader.
    pub async fn hand_over_leadership(&self, limit: Duration) -> crate::HandOver {
        let ctx = crate::handover::HandOverCtx {
            node_id: self.inner.node_id,
            raft: &self.inner.raft,
            peers: &*self.inner.peers,
            hold: &self.inner.hold,
            leading_since: &self.inner.leading_since,
            clock: &self.inner.clock,
            membership_changes: &self.inner.membership_changes,
            lease: Duration::from_millis(self.inner.config.election_timeout_max_ms),
        };
        crate::handover::hand_over(ctx, limit).await
    }

    /// Starts an election on this node now, as leader `leader_id` of term
    /// `term`, handing over, asks ([`Peers::stand_for_election`]).
    ///
    /// # Errors
    /// [`PeerError::Refused`] if elections are off here
    /// ([`Node::allow_elections`]), this node is not (yet) a voter that
    /// takes Raft messages, it leads already, or it does not know
    /// `leader_id` as leader in `term` (a request that came late must not
    /// depose the next leader); [`PeerError::Failed`] if its Raft core has
    /// stopped.
    pub async fn stand_for_election(&self, leader_id: u64, term: u64) -> Result<(), PeerError> {
        if !self.inner.elections_allowed.load(Ordering::SeqCst) {
            return Err(PeerError::Refused(format!(
                "node {} does not stand for election now",
                self.inner.node_id
            )));
        }
        if !self.takes_raft_messages() {
            return Err(PeerError::Refused(format!(
                "node {} has not been admitted to the cluster",
                self.inner.node_id
            )));
        }
        {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.state == ServerState::Leader {
                return Err(PeerError::Refused(format!("node {} leads already", self.inner.node_id)));
            }
            if metrics.current_term != term || metrics.current_leader != Some(leader_id) {
                return Err(PeerError::Refused(format!(
                    "node {} knows leader {:?} in term {}, not node {leader_id} in term {term}",
                    self.inner.node_id, metrics.current_leader, metrics.current_term
                )));
            }
            if !metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == self.inner.node_id)
            {
                return Err(PeerError::Refused(format!(
                    "node {} is not a voter",
                    self.inner.node_id
                )));
            }
        }
        tracing::info!(
            node = self.inner.node_id,
            "standing for election: the leader hands over"
        );
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| PeerError::Failed(e.to_string()))
    }

    /// Appends and commits a batch a follower forwarded. The batch's time
    /// is this node's (the leader's) clock, as for its own batches: a
    /// follower whose clock runs ahead does not make TTLs and `x-expires`
    /// fire early on every node. The times this leader stamps never go
    /// back (two batches stamped at once may reach the log in either
    /// order, a millisecond apart; apply only needs every replica to see
    /// the same).
    ///
    /// # Errors
    /// [`PeerError::NotLeader`] if this node is not the leader (nothing was
    /// appended); [`PeerError::Failed`] if the commit failed or did not
    /// happen within `forward_timeout_ms` (it may still happen).
    pub async fn write_forwarded(&self, mut proposal: Proposal) -> Result<u64, PeerError> {
        let Ok(_slot) = self.inner.forwarded.acquire().await else {
            return Err(PeerError::Failed("the node is shutting down".to_owned()));
        };
        // A deposed leader appends nothing: it says so before stamping. (A
        // batch that came during a hand-over asks once it is done, and hears
        // of the new leader: ADR 0035.)
        let responded = {
            let _append = self.inner.hold.append().await;
            if let Some(not_leader) = self.not_leader() {
                return Err(not_leader);
            }
            proposal.batch.now_ms = self.inner.clock.stamp();
            self.inner.raft.client_write_ff(proposal).await
        };
        crate::handover::committed(responded, self.inner.config.forward_timeout())
            .await
            .map_err(|not| match not {
                NotCommitted::NotLeader { leader_id, leader_addr } => PeerError::NotLeader { leader_id, leader_addr },
                NotCommitted::Failed(reason) => PeerError::Failed(reason),
            })
    }

    /// Adds `node_id` at `addr` as a learner, waits until it has caught up,
    /// then makes it a voter. Returns the log index of the membership that
    /// holds it as voter. A node that already is a voter is left as it is
    /// when it has a log ([`JoinMode::Rejoin`]); [`JoinMode::CheckFresh`]
    /// only checks.
    ///
    /// # Errors
    /// [`PeerError::NotLeader`] on a follower; [`PeerError::Failed`] if a
    /// membership change failed (e.g. another one is in progress);
    /// [`PeerError::Refused`] if a node on an empty data directory asks
    /// with the id of a voter.
    pub async fn add_voter(
        &self,
        node_id: u64,
        addr: &str,
        incarnation: u64,
        mode: JoinMode,
    ) -> Result<u64, PeerError> {
        let _one_change_at_a_time = self
            .inner
            .membership_changes
            .acquire()
            .await
            .map_err(|_| PeerError::Failed("node is shutting down".to_owned()))?;
        if let Some(not_leader) = self.not_leader() {
            return Err(not_leader);
        }
        let (is_voter, known, index) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().any(|id| id == node_id),
                membership.get_node(&node_id).cloned(),
                metrics.membership_config.log_id().map(|id| id.index).unwrap_or(0),
            )
        };
        // The same incarnation asking again is a join retried after its
        // reply was lost (the change committed meanwhile), not a wiped
        // voter: it is let in (ADR 0033).
        let asked_again = known
            .as_ref()
            .is_some_and(|known| known.incarnation != 0 && known.incarnation == incarnation);
        if is_voter && mode != JoinMode::Rejoin && !asked_again {
            tracing::warn!(
                node = self.inner.node_id,
                joining = node_id,
                addr,
                "refused: a voter asks to join with an empty data directory"
            );
            return Err(PeerError::Refused(format!(
                "node {node_id} is a voter of this cluster, but it started on an empty data directory \
                 (wiped or replaced): taken back, it would vote without the log it acknowledged. \
                 Remove it first (`warren ctl --server <a member> remove-node {node_id}`), \
                 then start it again: it joins as a new member"
            )));
        }
        if let Some(known) = known.as_ref().filter(|known| is_voter && known.incarnation != 0) {
            if incarnation != 0 && incarnation != known.incarnation {
                tracing::warn!(
                    node = self.inner.node_id,
                    joining = node_id,
                    addr,
                    known = format!("{:016x}", known.incarnation),
                    asking = format!("{incarnation:016x}"),
                    "refused: a voter asks to rejoin as another incarnation"
                );
                return Err(PeerError::Refused(format!(
                    "node {node_id} is a voter of this cluster as incarnation {:016x}; the node asking is \
                     incarnation {incarnation:016x}: its data directory is not the one that voter kept \
                     (replaced, or restored from elsewhere). Remove it first (`warren ctl --server <a member> \
                     remove-node {node_id}`), empty its data directory and start it again: it joins as a new member",
                    known.incarnation
                )));
            }
        }
        if mode == JoinMode::CheckFresh || (is_voter && known.as_ref().is_some_and(|known| known.addr == addr)) {
            return Ok(index);
        }
        tracing::info!(node = self.inner.node_id, joining = node_id, addr, "adding learner");
        self.while_leading(
            self.inner
                .raft
                .add_learner(node_id, Member::new(addr, incarnation), true),
        )
        .await?;
        tracing::info!(
            node = self.inner.node_id,
            joining = node_id,
            "learner caught up; making it a voter"
        );
        let response = self
            .while_leading(
                self.inner
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false),
            )
            .await?;
        Ok(response.log_id.index)
    }

    /// Awaits a membership change of openraft while this node leads, at
    /// most the start timeout. openraft 0.9 leaves such a call unanswered
    /// when the node loses leadership meanwhile (an isolated old leader
    /// comes back with a higher term and forces an election): the caller
    /// would wait forever, holding the one-change-at-a-time permit, and
    /// every later join through this node would wait behind it. Found by
    /// the seeded schedules (isolate the leader, heal, add a node: hung).
    async fn while_leading<T>(
        &self,
        change: impl std::future::Future<Output = Result<T, RaftError<u64, ClientWriteError<u64, Member>>>>,
    ) -> Result<T, PeerError> {
        let mut metrics = self.inner.raft.metrics();
        let lost = async move {
            loop {
                if !metrics.borrow_and_update().state.is_leader() {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        let limit = self.inner.config.start_timeout();
        tokio::select! {
            // A change that finished wins over a leadership lost at the same time.
            biased;
            outcome = tokio::time::timeout(limit, change) => match outcome {
                Ok(result) => result.map_err(peer_error),
                Err(_) => Err(PeerError::Failed(format!(
                    "the membership change did not finish within {limit:?}"
                ))),
            },
            () = lost => Err(self.not_leader().unwrap_or_else(|| {
                PeerError::Failed("this node stopped leading during the membership change".to_owned())
            })),
        }
    }

    /// Removes `node_id` from the voters and the membership, then proposes
    /// `NodeDown` for it: its connections close in the broker (consumers
    /// cancelled, unacked messages requeued, exclusive queues deleted).
    ///
    /// # Errors
    /// As for [`Node::add_voter`].
    pub async fn remove_node(&self, node_id: u64) -> Result<u64, PeerError> {
        let _one_change_at_a_time = self
            .inner
            .membership_changes
            .acquire()
            .await
            .map_err(|_| PeerError::Failed("node is shutting down".to_owned()))?;
        if let Some(not_leader) = self.not_leader() {
            return Err(not_leader);
        }
        let outcome = self
            .while_leading(
                self.inner
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false),
            )
            .await;
        let index = match outcome {
            Ok(response) => response.log_id.index,
            // Given up on, the change may still commit through the next
            // leader: if the node is out of the membership as this node
            // sees it, it is declared down all the same (nobody else
            // would: the failure detector watches members only).
            Err(e) if self.is_member(node_id) => return Err(e),
            Err(e) => {
                tracing::warn!(node = self.inner.node_id, removed = node_id, error = %e, "the removal finished without its reply");
                self.inner
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .log_id()
                    .map_or(0, |id| id.index)
            }
        };
        let down = warren_core::Request {
            origin: None,
            command: warren_core::Command::NodeDown {
                node: warren_core::NodeId(node_id),
            },
        };
        if self.inner.proposer.submit(down).await.is_err() {
            tracing::warn!(
                node = self.inner.node_id,
                removed = node_id,
                "could not propose NodeDown for a removed node: shutting down"
            );
        }
        Ok(index)
    }

    /// `Some(NotLeader { … })` naming the leader this node knows of, unless
    /// this node is the leader.
    pub fn not_leader(&self) -> Option<PeerError> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.node_id) {
            return None;
        }
        let leader_addr = metrics.current_leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
        });
        Some(PeerError::NotLeader {
            leader_id: metrics.current_leader,
            leader_addr,
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

    /// This replica's broker encoded as a snapshot sent to another node
    /// is: every body and page in place of its handle in this node's body
    /// store (handles are node-local: a node that restarted, or sealed a
    /// segment at another time, files the same message elsewhere). Equal on
    /// replicas that applied the same entries. Reads bodies from disk
    /// under the state's read lock: for tests and checks, not a hot path.
    ///
    /// # Errors
    /// A body or page cannot be read, or the state cannot be encoded.
    pub fn portable_state(&self) -> Result<Vec<u8>, String> {
        let bodies = self.inner.store.bodies();
        let state = self.inner.shared.read();
        crate::state_machine::portable(bodies.as_ref(), || crate::codec::encode(&state.broker))
            .map_err(|e| e.to_string())
    }

    /// A number that moves whenever this replica's users or permissions
    /// may have changed: access checks cached under one value hold until
    /// it moves.
    pub fn access_epoch(&self) -> u64 {
        self.inner.shared.access_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Messages this node holds (ready, or delivered and not acked) and
    /// the bytes of bodies it holds in memory: with a body store, what its
    /// cache holds (bodies and each entry's overhead) and the bodies still
    /// arriving in parts; without, every held body.
    pub fn held_backlog(&self) -> (u64, u64) {
        let bodies = self.inner.store.bodies();
        let (messages, bytes) = self.read(|broker| broker.held_backlog_with(bodies.is_some()));
        (messages, bytes + bodies.map_or(0, |b| b.cached_bytes()))
    }

    /// Keeps the body store's cache to at most `bytes`.
    pub fn limit_body_cache(&self, bytes: u64) {
        if let Some(bodies) = self.inner.store.bodies() {
            bodies.limit_cache(bytes);
        }
    }

    /// The body store's segment files and their bytes on disk, if the
    /// node keeps bodies on disk.
    pub fn body_store_usage(&self) -> Option<(usize, u64)> {
        self.inner.store.bodies().map(|b| b.disk_usage())
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

    /// On a leader of more than one voter: how long since a majority last
    /// accepted it (on this node's clock, see [`Self::leader_contact_age_ms`]), if that is longer than twice the election timeout
    /// (openraft keeps a leader cut off from the majority a leader; it
    /// just commits nothing). `None` on a follower or a leader in touch.
    pub fn leader_out_of_touch_ms(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader || metrics.membership_config.membership().voter_ids().count() <= 1 {
            return None;
        }
        let limit = self.inner.config.election_timeout_max_ms.saturating_mul(2);
        Some(self.leader_contact_age_ms(&metrics)).filter(|age| *age > limit)
    }

    /// Why the Raft core stopped, if it has (`None`: it runs).
    pub fn running_failure(&self) -> Option<String> {
        match &self.inner.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(fatal) => Some(format!("the Raft core stopped: {fatal}")),
        }
    }

    /// The commit index and this node's proposal, commit and apply
    /// counters (Prometheus).
    pub fn raft_counts(&self) -> crate::RaftCounts {
        self.inner.shared.counters.snapshot()
    }

    /// The voters of the current membership, and which of them answer a
    /// status call within `limit` (this node always does): what a health
    /// check needs to say whether stopping this node would lose quorum.
    pub async fn reachable_voters(&self, limit: std::time::Duration) -> (Vec<u64>, Vec<u64>) {
        let (voters, addrs): (Vec<u64>, BTreeMap<u64, String>) = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let addrs = membership.nodes().map(|(id, node)| (*id, node.addr.clone())).collect();
            (voters, addrs)
        };
        let mut reachable = Vec::new();
        for &voter in &voters {
            if voter == self.inner.node_id {
                reachable.push(voter);
                continue;
            }
            let Some(addr) = addrs.get(&voter) else { continue };
            let answer = tokio::time::timeout(limit, self.inner.peers.applied_index(addr)).await;
            if matches!(answer, Ok(Ok(_))) {
                reachable.push(voter);
            }
        }
        (voters, reachable)
    }

    /// Every member of the current membership: id, address, whether it is
    /// a voter, and the index it has applied up to as it answers a status
    /// call within `limit` (`None`: it did not answer). This node answers
    /// from its own state.
    pub async fn member_status(&self, limit: std::time::Duration) -> Vec<MemberStatus> {
        let (voters, nodes): (std::collections::BTreeSet<u64>, Vec<(u64, String)>) = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().collect(),
                membership.nodes().map(|(id, node)| (*id, node.addr.clone())).collect(),
            )
        };
        let own_applied = self.metrics().last_applied;
        let mut out = Vec::with_capacity(nodes.len());
        for (id, addr) in nodes {
            let applied = if id == self.inner.node_id {
                Some(own_applied)
            } else {
                match tokio::time::timeout(limit, self.inner.peers.applied_index(&addr)).await {
                    Ok(Ok(applied)) => Some(applied),
                    _ => None,
                }
            };
            out.push(MemberStatus {
                node_id: id,
                addr,
                voter: voters.contains(&id),
                applied,
            });
        }
        out
    }

    /// Bytes the store occupies on disk (0 for an in-memory store).
    pub async fn store_size_on_disk(&self) -> u64 {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.size_on_disk())
            .await
            .unwrap_or(0)
    }

    /// Hands a leader's append to openraft; an accepted one (any answer
    /// but a higher vote, which means the sender no longer leads) is
    /// contact with the leader for the delivery fence (ADR 0028).
    ///
    /// # Errors
    /// openraft's, as `Raft::append_entries` returns them.
    pub async fn append_entries(
        &self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) -> Result<openraft::raft::AppendEntriesResponse<u64>, openraft::error::RaftError<u64>> {
        let leader_commit = rpc.leader_commit.map(|id| id.index);
        let outcome = self.inner.raft.append_entries(rpc).await;
        if matches!(&outcome, Ok(response) if !matches!(response, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            self.inner.fence.heard_from_leader(leader_commit);
        }
        outcome
    }

    /// Whether this node must hold its deliveries back now: it may have
    /// been declared down (no word from a leader, or as leader from a
    /// majority, for half of `node_down_after_ms`), or it heard again and
    /// has not applied yet what was committed meanwhile (ADR 0028). A
    /// single voter is never fenced.
    pub fn deliveries_fenced(&self) -> bool {
        // Read in place, not cloned: this is asked per batch of deliveries.
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.membership_config.membership().voter_ids().count() <= 1 {
            return false;
        }
        if metrics.state == ServerState::Leader {
            return self.leader_contact_age_ms(&metrics) > self.inner.fence.fence_after_ms();
        }
        self.inner.fence.fenced(metrics.last_applied.map(|id| id.index))
    }

    /// How long this voter has been without the majority: as a follower
    /// or candidate, since it last accepted a leader's append; as leader,
    /// since a majority last answered it. `None` for a single voter or a
    /// node that is not a voter (a learner catching up).
    pub fn out_of_majority_ms(&self) -> Option<u64> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().count() <= 1 || !membership.voter_ids().any(|id| id == self.inner.node_id) {
            return None;
        }
        if metrics.state == ServerState::Leader {
            return Some(self.leader_contact_age_ms(&metrics));
        }
        Some(self.inner.fence.silent_ms())
    }

    /// As leader: how long ago a majority of the voters last accepted this
    /// node's requests, on its own clock (liveness.rs: openraft's
    /// `millis_since_quorum_ack` is as old as its last metrics report, and
    /// a leader resumed after a pause read "in touch" there and wrote the
    /// deliveries it held, which the others had given to other consumers
    /// meanwhile: chaos.rs, one unflagged duplicate in five runs).
    /// While in touch, it also refreshes the fence's contact time, so
    /// that this node does not look silent the moment it steps down.
    fn leader_contact_age_ms(&self, metrics: &openraft::RaftMetrics<u64, crate::Member>) -> u64 {
        let voters = metrics.membership_config.membership().voter_ids();
        let age = self.inner.contacts.majority_accepted_ms_ago(voters, self.inner.node_id);
        if age <= self.inner.fence.fence_after_ms() {
            self.inner.fence.in_touch_as_leader();
        }
        age
    }

    /// The openraft handle, for the RPC layer (append, vote, snapshot) and
    /// membership changes.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Resolves, with a description, once openraft has stopped on a fatal
    /// error: a log or snapshot write failed (disk full, I/O error) and
    /// this node can no longer persist anything, so it must not go on as a
    /// member that accepts clients and confirms nothing. Also resolves if
    /// the Raft core stops for any other reason (including
    /// [`Node::shutdown`]: watch it only while serving).
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches openraft's metrics.
    pub async fn fatal_error(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core stopped".to_owned();
            }
        }
    }

    /// Stops the tick driver and Raft. Requests submitted afterwards, and
    /// batches still in flight, get `Unavailable` replies.
    ///
    /// # Errors
    /// Raft's core task failed while stopping.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in &tasks {
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

/// Maps openraft's write errors to what a peer is told.
/// Bootstraps a one-member cluster of this node.
async fn initialize_alone(
    raft: &Raft<TypeConfig>,
    node_id: u64,
    addr: &str,
    incarnation: u64,
) -> Result<(), ClusterError> {
    tracing::info!(node = node_id, addr, "empty store: bootstrapping a one-member cluster");
    let members = BTreeMap::from([(node_id, Member::new(addr, incarnation))]);
    raft.initialize(members)
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))
}

fn peer_error(error: RaftError<u64, ClientWriteError<u64, Member>>) -> PeerError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => PeerError::NotLeader {
            leader_id: forward.leader_id,
            leader_addr: forward.leader_node.map(|n| n.addr),
        },
        other => PeerError::Failed(other.to_string()),
    }
}

/// A member that restarts with its log must not depose a healthy leader.
/// Its election timer would fire before the leader, still backing off
/// after failing to reach it, gets through; it would then campaign in ever
/// higher terms that the others refuse (their leader lease holds), and the
/// leader's next AppendEntries would meet that higher term and step down:
/// an election, and batches in flight answered `Unavailable`, for nothing
/// (openraft 0.9 has no pre-vote). So elections stay off until a leader is
/// heard from — this node applies past what it had applied at start (the
/// leader told it the commit index), or a new term began — or for `grace`
/// when none is (the whole cluster restarted).
///
/// Elections come back on only if [`Node::allow_elections`] has not
/// turned them off meanwhile.
fn hold_elections_until_a_leader_is_heard(
    raft: &Raft<TypeConfig>,
    allowed: Arc<AtomicBool>,
    grace: Duration,
) -> JoinHandle<()> {
    raft.runtime_config().elect(false);
    let raft = raft.clone();
    let (applied_at_start, term_at_start) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        (metrics.last_applied, metrics.current_term)
    };
    tokio::spawn(async move {
        let heard = raft
            .wait(Some(grace))
            .metrics(
                |m| m.last_applied > applied_at_start || m.current_term > term_at_start,
                "a leader heard from",
            )
            .await
            .is_ok();
        tracing::info!(heard, "restarted member: elections enabled");
        raft.runtime_config().elect(allowed.load(Ordering::SeqCst));
    })
}
