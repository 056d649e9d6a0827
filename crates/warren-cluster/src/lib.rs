//! `warren-cluster`: the Raft glue between the pure broker (`warren-core`)
//! and the rest of a Warren node.
//!
//! It owns openraft's type configuration ([`TypeConfig`]; one log entry is
//! one [`Proposal`], a proposer's batch of commands), the log storage on a
//! [`warren_store::LogStore`] ([`RaftLogStore`]), the state machine that
//! applies committed batches to the [`warren_core::Broker`] and hands the
//! resulting effects for this node's connections to an [`EffectSink`]
//! ([`StateMachine`]), the batching [`Proposer`], the tick driver that
//! proposes `Tick` when something can expire, and [`Node`], which assembles
//! them. It is generic over the Raft network (`openraft::RaftNetworkFactory`);
//! [`UnreachableNetwork`] serves single-node clusters and tests; the gRPC
//! network lives in `warren-rpc`, which also implements [`Peers`] (batch
//! forwarding from a follower's proposer to the leader, and `Join`).
//!
//! Above it sit the AMQP front end (submits requests, receives effects) and
//! the server (constructs the [`Node`]). Below it: `warren-core` and
//! `warren-store`. No lock is held across `.await`; every store call runs on
//! a blocking thread.

// openraft's error types (`StorageError`, `ConfigError`) are large; we
// return them where openraft's traits do.
#![allow(clippy::result_large_err)]

mod clock;
mod cluster_id;
mod codec;
mod compaction;
mod config;
mod effect_sink;
mod error;
mod fence;
mod handover;
mod incarnation;
mod leader_watch;
mod liveness;
mod log_store;
mod member;
mod network;
mod node;
mod peers;
mod proposer;
mod raft_stats;
mod sessions;
mod state_machine;
mod tick;
mod tracker;
mod type_config;

pub use cluster_id::ClusterIdCell;
pub use config::{NodeConfig, SNAPSHOT_CHUNK_BYTES};
pub use effect_sink::EffectSink;
pub use error::ClusterError;
pub use handover::HandOver;
pub use incarnation::{IncarnationCell, INCARNATION_FILE};
pub use log_store::RaftLogStore;
pub use member::Member;
pub use network::{UnreachableClient, UnreachableNetwork};
pub use node::{MemberStatus, Node, NodeStatus};
pub use peers::{BoxFuture, JoinMode, NoPeers, PeerError, Peers};
pub use proposer::Proposer;
pub use raft_stats::RaftCounts;
pub use state_machine::StateMachine;
pub use type_config::{Proposal, ProposalTag, TypeConfig};
