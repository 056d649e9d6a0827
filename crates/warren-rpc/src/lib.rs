//! `warren-rpc`: the gRPC between Warren nodes (`proto/warren.proto`).
//!
//! It owns the tonic service every node serves on its cluster address
//! ([`ClusterService`], started with [`serve`]) and the client side
//! ([`GrpcNetwork`]): openraft's network (`RaftNetworkFactory` for
//! [`warren_cluster::TypeConfig`]) and [`warren_cluster::Peers`] (forwarding a
//! follower's batch to the leader, joining a cluster), over one lazily
//! connected tonic channel per peer address.
//!
//! Every request carries a group id (0 while there is one Raft group) and
//! the cluster secret; the service refuses a wrong secret with
//! `PERMISSION_DENIED`. openraft's messages and Warren's proposals travel as
//! version-prefixed bincode in `bytes` fields ([`codec`]), so prost types
//! stay in this crate and never reach `warren-core`.
//!
//! Above it: `warren-server` (wires the service and network into a node).
//! Below it: `warren-cluster`.

// openraft's error types are large; they are returned where its traits do.
#![allow(clippy::result_large_err)]

pub mod codec;
mod network;
mod service;
mod tls;

/// The generated protobuf and tonic code.
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod pb {
    tonic::include_proto!("warren.cluster.v1");
}

pub use network::{on_leader, ClusterClient, GrpcClient, GrpcNetwork, NetworkConfig, SecretMetadata};
pub use service::{serve, AdminError, AdminHandler, AdminTable, ClusterService, SecretCheck, ServiceConfig};
pub use tls::ClusterTls;
/// For implementing [`AdminHandler`] outside this crate.
pub use tonic::async_trait;

/// The Raft group every request addresses while there is one group.
pub const DEFAULT_GROUP: u64 = 0;

/// The secret used when none is configured. Anyone who knows it can join or
/// drive the cluster: change it for anything but a laptop.
pub const DEV_SECRET: &str = "warren-dev-secret";

/// The request metadata (a binary gRPC header) that carries the cluster
/// secret. The service checks it before the request's body is read, so
/// that nobody without the secret can make a node decode anything.
pub const SECRET_METADATA: &str = "x-warren-secret-bin";

/// The request metadata that carries the caller's cluster id, once it
/// knows one (ADR 0022): a node that knows another refuses the request
/// before decoding it.
pub const CLUSTER_ID_METADATA: &str = "x-warren-cluster-id";

/// How many requests one cluster connection may have in service at once
/// (more wait): a peer cannot make a node run unbounded concurrent work.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Largest gRPC message either side accepts at most (a batch of large
/// messages in one AppendEntries; snapshots are sent in chunks of
/// [`warren_cluster::SNAPSHOT_CHUNK_BYTES`]); a node sets a lower bound
/// from its configuration ([`rpc_message_limit`]).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// The largest cluster RPC a node with `max_message_size` takes or sends:
/// twice the largest AMQP message, at least 16 MiB (four snapshot chunks,
/// a transaction's 4 MiB entry with room to spare), at most
/// [`MAX_MESSAGE_BYTES`]. Bodies over 256 KiB go through Raft in parts
/// (ADR 0013), so nothing a node sends comes near it; the bound is what an
/// authenticated peer, or a bug, can make a node buffer.
pub fn rpc_message_limit(max_message_size: u64) -> usize {
    let twice = usize::try_from(max_message_size.saturating_mul(2)).unwrap_or(MAX_MESSAGE_BYTES);
    twice.clamp(16 * 1024 * 1024, MAX_MESSAGE_BYTES)
}
