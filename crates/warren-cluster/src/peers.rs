//! What a node asks of other nodes besides openraft's own RPCs: forwarding
//! a proposer's batch to the leader, and joining a cluster. The gRPC crate
//! implements [`Peers`]; [`NoPeers`] serves single-node setups and tests.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

use crate::type_config::Proposal;

/// A boxed, sendable future (the trait is used as `Arc<dyn Peers>`).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why another node did not take a forwarded batch or a join.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PeerError {
    /// The node asked is not the leader: nothing was appended. It names the
    /// leader it knows of, if any.
    #[error("node is not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// Anything else: the transport failed, timed out, or the leader could
    /// not commit. The request may or may not have taken effect.
    #[error("{0}")]
    Failed(String),
    /// The leader refused, and asking again will not change its answer
    /// (a node on an empty data directory whose id is still a voter).
    #[error("{0}")]
    Refused(String),
}

/// What a node asking to join tells of itself (ADR 0022).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// It has a log: a voter already known at its address stays as it is
    /// (a restart, or `warren ctl add-node`).
    Rejoin,
    /// Its data directory is empty: refused if its id is a voter, since a
    /// voter without the log it acknowledged must not vote or count
    /// toward a commit.
    Fresh,
    /// Only the check of [`JoinMode::Fresh`]: nothing is added. A fresh
    /// node asks this before it takes any Raft message.
    CheckFresh,
}

/// Calls to other members of the cluster.
pub trait Peers: Send + Sync + 'static {
    /// Asks the node at `addr` (believed leader) to append and commit
    /// `proposal`. `Ok(())` once it is committed; the replies for its
    /// requests come through every node's apply, not through this call.
    fn forward(&self, addr: &str, proposal: Proposal) -> BoxFuture<Result<(), PeerError>>;

    /// Asks the node at `via` to make `node_id` (reachable at `addr`, of
    /// incarnation `incarnation`, 0 if unknown: ADR 0033) a voter.
    /// `Ok(index)`: the membership holding it as voter is at log index
    /// `index`.
    fn join(
        &self,
        via: &str,
        node_id: u64,
        addr: &str,
        incarnation: u64,
        mode: JoinMode,
    ) -> BoxFuture<Result<u64, PeerError>>;

    /// Whether the node at `addr` is a member of an initialized cluster
    /// (its membership names anyone).
    fn in_a_cluster(&self, addr: &str) -> BoxFuture<Result<bool, PeerError>>;

    /// How far the node at `addr` has applied its log (its status).
    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>>;

    /// Whether no process serves the cluster port at `addr` any more (its
    /// name does not resolve, or the connection is refused); false when
    /// something answers or nothing answers in time. The leader watch
    /// calls an election at once when the leader's process is gone (ADR
    /// 0029). The default probes over TCP; an in-process network answers
    /// from what it knows of its nodes.
    fn process_gone(&self, addr: &str) -> BoxFuture<bool> {
        let addr = addr.to_owned();
        Box::pin(async move { crate::leader_watch::port_gone(&addr).await })
    }

    /// Asks the voter at `addr` to stand for election now: leader
    /// `leader_id` of term `term`, stopping, hands its leadership over this
    /// way to a voter that holds its whole log (ADR 0035). `Ok(())` once
    /// the election has started, which is not yet won.
    fn stand_for_election(&self, addr: &str, leader_id: u64, term: u64) -> BoxFuture<Result<(), PeerError>>;
}

/// Reaches nobody: a single node never forwards nor joins.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

impl Peers for NoPeers {
    fn forward(&self, addr: &str, _proposal: Proposal) -> BoxFuture<Result<(), PeerError>> {
        let reason = format!("no network to forward to {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn join(
        &self,
        via: &str,
        _node_id: u64,
        _addr: &str,
        _incarnation: u64,
        _mode: JoinMode,
    ) -> BoxFuture<Result<u64, PeerError>> {
        let reason = format!("no network to join through {via}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn in_a_cluster(&self, addr: &str) -> BoxFuture<Result<bool, PeerError>> {
        let reason = format!("no network to reach {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>> {
        let reason = format!("no network to reach {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn stand_for_election(&self, addr: &str, _leader_id: u64, _term: u64) -> BoxFuture<Result<(), PeerError>> {
        let reason = format!("no network to reach {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }
}
