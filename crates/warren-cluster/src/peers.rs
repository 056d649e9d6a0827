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
}

/// Calls to other members of the cluster.
pub trait Peers: Send + Sync + 'static {
    /// Asks the node at `addr` (believed leader) to append and commit
    /// `proposal`. `Ok(())` once it is committed; the replies for its
    /// requests come through every node's apply, not through this call.
    fn forward(&self, addr: &str, proposal: Proposal) -> BoxFuture<Result<(), PeerError>>;

    /// Asks the node at `via` to make `node_id` (reachable at `addr`) a
    /// voter. `Ok(index)`: the membership holding it as voter is at log
    /// index `index`.
    fn join(&self, via: &str, node_id: u64, addr: &str) -> BoxFuture<Result<u64, PeerError>>;

    /// How far the node at `addr` has applied its log (its status).
    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>>;
}

/// Reaches nobody: a single node never forwards nor joins.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

impl Peers for NoPeers {
    fn forward(&self, addr: &str, _proposal: Proposal) -> BoxFuture<Result<(), PeerError>> {
        let reason = format!("no network to forward to {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn join(&self, via: &str, _node_id: u64, _addr: &str) -> BoxFuture<Result<u64, PeerError>> {
        let reason = format!("no network to join through {via}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }

    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>> {
        let reason = format!("no network to reach {addr}: this node has no peers");
        Box::pin(async move { Err(PeerError::Failed(reason)) })
    }
}
