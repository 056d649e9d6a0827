//! Errors of the Raft glue.

use thiserror::Error;

/// Why a node could not start, stop or take a request.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Store(#[from] warren_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("node {node} did not become ready within {timeout_ms} ms: {reason}")]
    StartTimeout { node: u64, timeout_ms: u64, reason: String },
    /// The cluster refused this node for good (ADR 0022): the reason says
    /// what the operator must do.
    #[error("node {node} refused by the cluster: {reason}")]
    Refused { node: u64, reason: String },
    /// The proposer's task has stopped; nothing more can be submitted.
    #[error("the proposer is closed")]
    Closed,
    #[error("a blocking task failed: {0}")]
    Join(String),
}
