//! `warren-testkit` (dev-only): in-process Warren clusters over a seeded,
//! fault-injecting network, command-level test clients, and the checks
//! every cluster test ends with.
//!
//! - [`Cluster`]: N [`warren_cluster::Node`]s on `MemStore`s; node 1
//!   bootstraps, the others join through it. Nodes can be killed (the
//!   store is kept: a crash), restarted with a new boot id, added and
//!   removed.
//! - [`FaultNet`]: routes openraft's RPCs and Warren's forward / join /
//!   status calls to the target node's handle under the current
//!   [`Faults`] (isolate a node, cut a directed link, delay, drop requests,
//!   lose responses). One RNG seeded from `WARREN_TESTKIT_SEED` (or
//!   random, and printed) makes every random choice.
//! - [`client`]: publishers and consumers that submit `warren_core`
//!   commands to a node's proposer and read effects from its sink; they
//!   record what they see in a [`Ledger`].
//! - [`Workload::finish`]: heal, stop the clients, drain the queue,
//!   [`Cluster::converge`] (all nodes' applied states equal), and
//!   [`check_history`] (no confirmed message lost, none held by two
//!   consumers at once, none delivered after its ack was confirmed).
//!
//! It sits above `warren-cluster`, `warren-core` and `warren-store` and is
//! used only by tests.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
mod cluster;
mod error;
pub mod ledger;
mod network;
mod node_runtime;
mod router;
mod seed;
mod workload;

pub use cluster::{Cluster, ClusterOptions, NodeHandle};
pub use error::TestkitError;
pub use ledger::{check_history, Event, Ledger, MsgId, Violation};
pub use network::{addr_node, node_addr, FaultNet, FaultNetwork, Faults, Lost};
pub use router::Router;
pub use seed::{seed_from_env, SEED_ENV};
pub use workload::{LoadOptions, Report, Workload};
