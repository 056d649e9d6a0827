//! openraft's type configuration for Warren.

use serde::{Deserialize, Serialize};
use warren_core::Batch;

openraft::declare_raft_types!(
    /// Warren's Raft types: a log entry carries a [`Proposal`], the response
    /// is `()` (outcomes travel as effects), nodes are [`crate::Member`]s (address and incarnation),
    /// a snapshot travels as a file (it carries every queued body).
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = crate::Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One Raft entry's payload: a proposer's batch and who proposed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Which proposer built the batch. Apply ignores it (it is not part of
    /// the broker's input); the proposing node uses it to give every request
    /// exactly one reply even when the commit outcome is ambiguous.
    pub tag: Option<ProposalTag>,
    pub batch: Batch,
}

/// Identifies a batch of one run of one node's proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalTag {
    pub node: u64,
    /// Random per start of the node, so a replayed entry of an earlier run
    /// is never mistaken for one of this run.
    pub incarnation: u64,
    pub seq: u64,
}
